// A TypeScript app against the package's declarations: package.test.mjs compiles it with
// `tsc --strict --noEmit`.
import { EXPRESSIONS, FerError, load, type Expression, type Face, type FrameInfo } from 'fer-cnn';

export async function happiest(image: HTMLImageElement): Promise<Face | undefined> {
  const fer = await load({ model: 'fast', threads: 2 });
  try {
    const faces = await fer.detect(image);
    const sizes: number[] = faces.map((face) => face.box.width * face.box.height);
    console.log(sizes, faces.frame.timings.totalMs, fer.model.uncertainBelow);
    return faces.sort((a, b) => b.probabilities.happy - a.probabilities.happy)[0];
  } catch (error) {
    if (error instanceof FerError && error.code === 'source-unreadable') return undefined;
    throw error;
  } finally {
    fer.dispose();
  }
}

export function follow(video: HTMLVideoElement, onLabel: (id: number, label: Expression, flags: string[]) => void): Promise<() => void> {
  return load().then((fer) => fer.track(video, (faces: Face[], frame: FrameInfo) => {
    for (const face of faces) onLabel(face.id, face.expression, face.quality.flags);
    if (frame.timings.totalMs > 100) console.warn('slow frame');
  }));
}

export async function classifyCrops(crops: Uint8Array): Promise<Record<Expression, number>[]> {
  const fer = await load({ model: new URL('https://example.org/model.safetensors') });
  const probabilities: Float32Array = await fer.classify(crops);
  const rows: Record<Expression, number>[] = [];
  for (let i = 0; i < probabilities.length; i += EXPRESSIONS.length) {
    rows.push(Object.fromEntries(EXPRESSIONS.map((name, k) => [name, probabilities[i + k]])) as Record<Expression, number>);
  }
  return rows;
}
