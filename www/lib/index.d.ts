// Type declarations for fer-cnn's browser entry (index.js). docs/api.md is the reference.

/** The seven expressions, in the order of every probability array (FER2013's class order). */
export declare const EXPRESSIONS: readonly ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral'];

export type Expression = (typeof EXPRESSIONS)[number];

/** One probability per expression; they sum to 1. */
export type Probabilities = Record<Expression, number>;

/** Stable error codes: branch on these, show the message. */
export type FerErrorCode =
  | 'invalid-argument'
  | 'engine-unavailable'
  | 'detector-invalid'
  | 'model-fetch'
  | 'model-invalid'
  | 'source-unreadable'
  | 'worker-crashed'
  | 'disposed'
  | 'engine-error';

/** Every error the library throws or rejects with. */
export declare class FerError extends Error {
  readonly name: 'FerError';
  readonly code: FerErrorCode;
  constructor(code: FerErrorCode, message: string, options?: { cause?: unknown });
}

/** A rectangle in the source's pixels (x to the right, y down). */
export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** Whether the face is good enough to trust: thresholds measured on FER2013 (docs/quality.md). */
export interface FaceQuality {
  /** Side of the square the face was cropped from, in source pixels. */
  size: number;
  /** Mean grey of the 48x48 crop, 0 (black) to 1 (white). */
  brightness: number;
  /** Spread of grey in the crop (standard deviation), 0 to 1. */
  contrast: number;
  /** The conditions under which the model's accuracy measurably falls. */
  flags: Array<'small' | 'dark' | 'bright' | 'low-contrast'>;
}

export interface Face {
  /** The face's box as the detector found it. */
  box: Box;
  /** The square cropped from it, FER2013's framing: what the model saw. */
  cropBox: Box;
  /** The expression named: the most probable one (in `track`, held through near ties). */
  expression: Expression;
  /** The probability of `expression`. */
  score: number;
  probabilities: Probabilities;
  /** True when the top probability is below the model's threshold (`fer.model.uncertainBelow`). */
  uncertain: boolean;
  /** The face detector's confidence, 0 to 1. */
  faceScore: number;
  quality: FaceQuality;
  /** The 48x48 grey crop the model saw, row by row. */
  crop: Uint8Array;
  /** In `track`: the same number while the face is followed from frame to frame, never reused. */
  id: number;
}

export interface StageTimings {
  /** Capture to result, in milliseconds. */
  totalMs: number;
  copyMs: number;
  findMs: number;
  cropMs: number;
  classifyMs: number;
  /** Whether the whole frame was searched (else only around the faces already known). */
  wholeFrame: boolean;
}

export interface FrameInfo {
  width: number;
  height: number;
  timings: StageTimings;
}

/** What the current model is. */
export interface ModelInfo {
  name: string;
  parameters: number;
  multiplyAdds: number;
  /** How the file stores its weights. */
  precision: 'f32' | 'f16' | 'int8';
  /** Whether faces are classified in 8-bit integer arithmetic (int8 files). */
  integerArithmetic: boolean;
  /** The softmax temperature fitted on FER2013 PublicTest (1 when the file has none). */
  temperature: number;
  /** A face whose top probability is below this is `uncertain`. */
  uncertainBelow: number;
  /** Accuracy on FER2013 PublicTest recorded in the file, if any (0–1). */
  publicTestAccuracy: number | null;
}

/** An ONNX graph whose weights are in a separate file (PyTorch 2's exporter writes `NAME.onnx.data`). */
export interface OnnxWithWeights {
  graph: ArrayBuffer | ArrayBufferView | Blob;
  data: ArrayBuffer | ArrayBufferView | Blob;
  /** The weights file's name, as the graph refers to it (a File's own name by default). */
  dataName?: string;
}

export type ModelSource =
  | 'default'
  | 'fast'
  | string
  | URL
  | ArrayBuffer
  | ArrayBufferView
  | Blob
  | [Blob, Blob]
  | OnnxWithWeights;

export interface LoadOptions {
  /** 'default' (most accurate), 'fast' (291 KB, under a millisecond a face), a URL, or a model file's bytes. Default 'default'. */
  model?: ModelSource;
  /** At most this many threads (threads need a cross-origin isolated page); 1 for the single-threaded engine. */
  threads?: number;
  /** Where the package's files (pkg/, pkg-threads/, models/, vendor/) are served, when not next to the module. */
  baseUrl?: string | URL;
  /** Also classify each face's mirror image and average: more accurate, twice the classify time. */
  mirror?: boolean;
}

export interface ImageDataLike {
  data: Uint8ClampedArray | Uint8Array;
  width: number;
  height: number;
}

export type ImageSource =
  | HTMLImageElement
  | HTMLVideoElement
  | HTMLCanvasElement
  | ImageBitmap
  | ImageData
  | ImageDataLike
  | VideoFrame
  | OffscreenCanvas
  | Blob;

export interface TrackOptions {
  /** Hears errors while tracking (default: console.error). */
  onError?: (error: FerError) => void;
}

/** One capture for a calibration: a 48x48 grey crop and the expression the person was asked to make. */
export interface Capture {
  expression: Expression;
  crop: Uint8Array | Uint8ClampedArray;
}

export interface CalibrationProgress {
  phase: 'features' | 'fitting';
  done: number;
  total: number;
}

export interface CalibrationResult {
  /** Whether the personal model helps; when false, `model` is null and the current model should stay. */
  accepted: boolean;
  /** Why it was accepted or refused, in a sentence to show the person. */
  reason: string;
  /** The personal model's file (.safetensors): pass it to `setModel` or `load`, keep it. */
  model: Uint8Array | null;
  /** Accuracy on the held-out captures (the last quarter of each expression's), before and after; null with too few captures. */
  heldOut: { before: number; after: number } | null;
  /** Reference faces shipped with the library, and the share the personal weights would read: the most the model can lose on ordinary faces. */
  referenceFaces: { faces: number; readPersonally: number };
  /** The engine's full report. */
  report: Record<string, unknown>;
}

export interface CalibrateOptions {
  onProgress?: (progress: CalibrationProgress) => void;
}

export interface FerEventMap {
  restart: CustomEvent<{ error: FerError; restarts: number }>;
  failed: CustomEvent<{ error: FerError }>;
}

export interface Fer extends EventTarget {
  readonly model: ModelInfo;
  readonly threads: number;
  readonly restarts: number;
  readonly version: string;
  /** The faces in `source`, largest first; `frame` says the picture's size and the time of each stage. */
  detect(source: ImageSource): Promise<Face[] & { frame: FrameInfo }>;
  /** Follows the faces of a playing video; returns a function that stops. */
  track(video: HTMLVideoElement, onFaces: (faces: Face[], frame: FrameInfo) => void, options?: TrackOptions): () => void;
  /** Probabilities for 48x48 grey crops (n × 2304 bytes): n × 7 numbers in EXPRESSIONS' order. */
  classify(crops48: Uint8Array | Uint8ClampedArray): Promise<Float32Array>;
  /** Calibrates the current model to one person's captures; the current model is not changed. */
  calibrate(captures: Capture[], options?: CalibrateOptions): Promise<CalibrationResult>;
  setModel(model: ModelSource): Promise<ModelInfo>;
  setMirror(on: boolean): Promise<void>;
  dispose(): void;
  addEventListener<K extends keyof FerEventMap>(type: K, listener: (event: FerEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

/** Starts a recognizer: the engine in a worker, the face detector and a model. */
export declare function load(options?: LoadOptions): Promise<Fer>;

/** Advanced: the engine's low-level API on this thread (training, model files). */
export declare function startEngine(options?: { baseUrl?: string | URL }): Promise<{ engine: any; memory: WebAssembly.Memory; build: 'pkg' | 'pkg-threads'; module: WebAssembly.Module }>;

/** Advanced: the engine in a worker of the app's own, from what `startEngine` gives. */
export declare function engineInWorker(
  engine: { build: 'pkg' | 'pkg-threads'; module: WebAssembly.Module; baseUrl?: string | URL },
  purpose?: string,
): Promise<{ engine: any; memory: WebAssembly.Memory; threads: number }>;
