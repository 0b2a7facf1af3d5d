// Type declarations for fer-cnn's Node entry (node.js). docs/api.md is the reference.
import type { CalibrateOptions, CalibrationResult, Capture, Face, ImageDataLike, ModelInfo } from './index.js';

export { EXPRESSIONS, FerError } from './index.js';
export type { Box, CalibrationResult, Capture, Expression, Face, FaceQuality, FerErrorCode, ImageDataLike, ModelInfo, Probabilities } from './index.js';

export interface NodeLoadOptions {
  /** 'default', 'fast', a file path or URL, or a model file's bytes. Default 'default'. */
  model?: 'default' | 'fast' | string | URL | ArrayBuffer | ArrayBufferView;
  mirror?: boolean;
}

export interface NodeFer {
  readonly model: ModelInfo;
  readonly threads: 1;
  readonly version: string;
  /** The faces in RGBA pixels, largest first. */
  detect(source: ImageDataLike): Promise<Face[]>;
  classify(crops48: Uint8Array | Uint8ClampedArray): Promise<Float32Array>;
  calibrate(captures: Capture[], options?: CalibrateOptions): Promise<CalibrationResult>;
  setModel(model: NodeLoadOptions['model']): Promise<ModelInfo>;
  setMirror(on: boolean): Promise<void>;
  dispose(): void;
}

export declare function load(options?: NodeLoadOptions): Promise<NodeFer>;
