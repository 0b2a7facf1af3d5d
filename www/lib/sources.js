// What `detect` and `track` accept, turned into what the worker reads: an ImageBitmap it is
// given (transferred, no copy) or RGBA pixels.
import { FerError, messageOf } from './common.js';

// Photos are scaled down to this long side first: faces stay large enough to find, and a
// 50-megapixel photo does not need 200 MB of wasm memory.
export const MAX_PHOTO_SIDE = 1280;

const has = (name) => typeof globalThis[name] === 'function';
const unreadable = (message, cause) => new FerError('source-unreadable', message, cause ? { cause } : undefined);

/** Whether `source` is `{ data, width, height }` RGBA pixels (ImageData, or an object like it). */
export function isPixels(source) {
  return source !== null && typeof source === 'object' && 'data' in source && Number.isInteger(source.width) && Number.isInteger(source.height);
}

/** `{ data, width, height }` checked: whole RGBA pixels of a non-empty frame. */
export function checkedPixels({ data, width, height }) {
  if (!(data instanceof Uint8ClampedArray || data instanceof Uint8Array)) {
    throw unreadable(`ImageData-like sources need RGBA bytes in \`data\` (Uint8ClampedArray or Uint8Array); got ${data?.constructor?.name ?? typeof data}.`);
  }
  if (width < 1 || height < 1 || data.length !== width * height * 4) {
    throw unreadable(`ImageData-like sources need width × height × 4 bytes: ${width} × ${height} × 4 = ${width * height * 4}, got ${data.length}.`);
  }
  return { data, width, height };
}

/** The natural size of a source the browser can draw, or null when it has no picture yet. */
function sizeOf(source) {
  if (has('HTMLVideoElement') && source instanceof HTMLVideoElement) {
    return source.readyState >= 2 ? { width: source.videoWidth, height: source.videoHeight } : null;
  }
  if (has('HTMLImageElement') && source instanceof HTMLImageElement) {
    return source.complete && source.naturalWidth > 0 ? { width: source.naturalWidth, height: source.naturalHeight } : null;
  }
  if (has('VideoFrame') && source instanceof VideoFrame) return { width: source.displayWidth, height: source.displayHeight };
  if ('width' in source && 'height' in source) return { width: source.width, height: source.height };
  return null;
}

function drawable(source) {
  return ['HTMLImageElement', 'HTMLVideoElement', 'HTMLCanvasElement', 'ImageBitmap', 'OffscreenCanvas', 'VideoFrame', 'SVGImageElement', 'Blob']
    .some((name) => has(name) && source instanceof globalThis[name]);
}

/**
 * The current frame of a playing `video` as a VideoFrame (no copy), for the worker to convert
 * into wasm memory itself; null where VideoFrame is missing or the video has no frame yet.
 */
export function videoFrameOf(video) {
  if (!has('VideoFrame') || video.readyState < 2 || video.videoWidth === 0) return null;
  try {
    const frame = new VideoFrame(video);
    return { videoFrame: frame, width: frame.displayWidth, height: frame.displayHeight, scale: 1 };
  } catch {
    return null;
  }
}

/**
 * One frame of `source` for the worker: `{ bitmap, width, height, scale }` (scale: source
 * pixels per frame pixel) or `{ pixels, width, height, scale: 1 }`. Photos larger than
 * `maxSide` are scaled down; video frames are taken as they are.
 */
export async function frameOf(source, { maxSide = Infinity } = {}) {
  if (isPixels(source)) {
    const { data, width, height } = checkedPixels(source);
    return { pixels: data, width, height, scale: 1 };
  }
  if (source === null || typeof source !== 'object' || !drawable(source)) {
    throw unreadable(`detect takes an <img>, <video>, <canvas>, ImageBitmap, ImageData, VideoFrame, OffscreenCanvas or Blob; got ${source?.constructor?.name ?? typeof source}.`);
  }
  if (has('HTMLImageElement') && source instanceof HTMLImageElement && !source.complete) {
    try {
      await source.decode();
    } catch (error) {
      throw unreadable(`The image ${source.currentSrc || source.src} did not load or decode: check its URL and format.`, error);
    }
  }
  // A Blob's size is known once it is decoded.
  const isBlob = has('Blob') && source instanceof Blob;
  const size = isBlob ? null : sizeOf(source);
  if (!isBlob && !(size?.width > 0 && size?.height > 0)) {
    const video = has('HTMLVideoElement') && source instanceof HTMLVideoElement;
    throw unreadable(video
      ? 'The video has no frame yet: call this once it has fired "loadeddata" (readyState ≥ 2).'
      : 'The image is empty or has not loaded: wait for its "load" event.');
  }
  try {
    let bitmap = await createImageBitmap(source);
    const sourceWidth = size?.width ?? bitmap.width;
    const scale = Math.max(1, Math.max(bitmap.width, bitmap.height) / maxSide);
    if (scale > 1) {
      const resized = await createImageBitmap(bitmap, {
        resizeWidth: Math.max(1, Math.round(bitmap.width / scale)),
        resizeHeight: Math.max(1, Math.round(bitmap.height / scale)),
        resizeQuality: 'high',
      });
      bitmap.close();
      bitmap = resized;
    }
    return { bitmap, width: bitmap.width, height: bitmap.height, scale: sourceWidth / bitmap.width };
  } catch (error) {
    if (error?.name === 'SecurityError') {
      throw unreadable('The image comes from another origin without CORS, so its pixels cannot be read: serve it with Access-Control-Allow-Origin and set crossorigin="anonymous" on the element.', error);
    }
    throw unreadable(`The picture could not be read (${messageOf(error)}): use a decodable image (JPEG, PNG, WebP) or a playing video.`, error);
  }
}
