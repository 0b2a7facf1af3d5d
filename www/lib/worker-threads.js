// The library's worker on the multi-threaded engine build, where the page is cross-origin
// isolated (see worker.js).
import * as engine from '../pkg-threads/fer_cnn.js';
import { serveRecognizer } from './worker.js';

serveRecognizer(engine);
