// The package in Node: the same detect and classify as in the browser, on pixels the browser
// drew (read from the JSON file named on the command line). Prints JSON.
import fs from 'node:fs/promises';
import { EXPRESSIONS, FerError, load } from 'fer-cnn';

const { width, height, rgba, crop } = JSON.parse(await fs.readFile(process.argv[2], 'utf8'));
const fer = await load({ model: 'fast' });
const faces = await fer.detect({ data: Uint8ClampedArray.from(rgba), width, height });
const probabilities = await fer.classify(Uint8Array.from(crop));
const wrongSource = await fer.detect({ width: 2 }).then(() => null, (error) => (error instanceof FerError ? error.code : String(error)));
fer.dispose();
const afterDispose = await fer.classify(Uint8Array.from(crop)).then(() => null, (error) => error.code);
process.stdout.write(JSON.stringify({
  expressions: EXPRESSIONS, faces: faces.map(({ crop: c, ...face }) => ({ ...face, crop: Array.from(c) })),
  probabilities: Array.from(probabilities), wrongSource, afterDispose,
}));
