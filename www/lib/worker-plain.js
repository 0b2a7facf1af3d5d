// The library's worker on the single-threaded engine build (see worker.js).
import * as engine from '../pkg/fer_cnn.js';
import { serveRecognizer } from './worker.js';

serveRecognizer(engine);
