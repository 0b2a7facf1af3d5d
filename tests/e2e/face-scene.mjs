// The camera's test pictures, shared by camera.test.mjs and bench-camera.mjs: the scene of
// three FER2013 faces on a gradient in tests/fixtures/face_scene.pgm, enlarged for a 640x480
// camera, as fake-camera video (.y4m) or as a PNG photo.
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

export const SCENE_FACES = 3;
/** Where the scene's faces are (left, top, side), as SCENE_FACES in tests/face.rs. */
const SCENE_SQUARES = [[16, 40, 96], [124, 120, 80], [214, 24, 88]];
/** The face the detector finds best, which fake-face-camera.mjs films too. */
const BEST_FOUND_FACE = 2;
const SCENE_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/face_scene.pgm');

/** The test scene's grey pixels: { width, height, grey }. */
export async function readScene() {
  const pgm = await fs.readFile(SCENE_PATH);
  const [header, width, height] = pgm.toString('latin1', 0, 20).match(/^P5\s+(\d+)\s+(\d+)\s+255\s/);
  return { width: Number(width), height: Number(height), grey: pgm.subarray(header.length) };
}

/**
 * The scene with only its best-found face: each other face's square is painted over by
 * blending, along each row, the gradient just left and right of it.
 */
export function withOneFace({ width, height, grey }) {
  const kept = Buffer.from(grey);
  for (const [left, top, side] of SCENE_SQUARES.filter((_, i) => i !== BEST_FOUND_FACE)) {
    const [x0, x1] = [Math.max(left - 2, 0), Math.min(left + side + 1, width - 1)];
    for (let y = Math.max(top - 2, 0); y <= Math.min(top + side + 1, height - 1); y++) {
      const [a, b] = [grey[y * width + x0], grey[y * width + x1]];
      for (let x = x0 + 1; x < x1; x++) kept[y * width + x] = Math.round(a + ((b - a) * (x - x0)) / (x1 - x0));
    }
  }
  return { width, height, grey: kept };
}

/** Nearest-neighbour enlargement by an integer factor: a 640x480 camera from the 320x240 scene. */
export function enlarge({ width, height, grey }, factor) {
  const big = Buffer.alloc(width * height * factor * factor);
  for (let y = 0; y < height * factor; y++) {
    for (let x = 0; x < width * factor; x++) {
      big[y * width * factor + x] = grey[Math.floor(y / factor) * width + Math.floor(x / factor)];
    }
  }
  return { width: width * factor, height: height * factor, grey: big };
}

/** A few frames of 4:2:0 video (grey: chroma at 128) in the YUV4MPEG2 format Chromium's fake camera reads. */
export function y4m({ width, height, grey }, frames = 3) {
  const chroma = Buffer.alloc((width / 2) * (height / 2) * 2, 128);
  const frame = Buffer.concat([Buffer.from('FRAME\n'), grey, chroma]);
  return Buffer.concat([Buffer.from(`YUV4MPEG2 W${width} H${height} F30:1 Ip A1:1 C420jpeg\n`), ...Array(frames).fill(frame)]);
}

/** A grey PNG, for the photo path. */
export function png({ width, height, grey }) {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth; colour type 0 (grey) and the rest are zero
  const rows = [];
  for (let y = 0; y < height; y++) rows.push(Buffer.from([0]), grey.subarray(y * width, (y + 1) * width));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header), chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))), chunk('IEND', Buffer.alloc(0)),
  ]);
}
