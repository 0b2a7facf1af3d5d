// Consistent changes in how faces look, as a different camera, room and person would make them:
// the JavaScript twin of tests/common/shift.rs (same parameters, same random draws from the
// same seeds), for calibrating in the tab under shifts the method was not tuned on.

const MASK = (1n << 64n) - 1n;

/** tests/common's Lcg: the same sequence from the same seed. */
export class Lcg {
  constructor(seed) {
    this.state = BigInt(seed) & MASK;
  }

  next() {
    this.state = (this.state * 6364136223846793005n + 1442695040888963407n) & MASK;
    return Number(this.state >> 33n);
  }
}

/** A random shift of every kind (Shift::draw). */
export function drawShift(rng) {
  const uniform = (low, high) => low + ((high - low) * (rng.next() % 10_000)) / 10_000;
  const blur = Math.floor(uniform(0, 2.99));
  const gamma = uniform(0.6, 1.6);
  const contrast = uniform(0.45, 0.9);
  const brightness = uniform(0, 1) < 0.5 ? uniform(60, 95) : uniform(150, 175);
  const lightStrength = uniform(0.15, 0.45);
  const lightAngle = uniform(-Math.PI, Math.PI);
  const vignette = uniform(0, 0.4);
  const noise = uniform(3, 12);
  return { blur, gamma, contrast, brightness, lightStrength, lightAngle, vignette, noise };
}

/** `face` (48x48 grey) as the shifted camera would see it (Shift::apply); `rng` draws the noise. */
export function applyShift(shift, face, rng) {
  const side = 48;
  const at = (x, y) => face[Math.min(side - 1, Math.max(0, y)) * side + Math.min(side - 1, Math.max(0, x))];
  const r = shift.blur;
  const [dx, dy] = [Math.cos(shift.lightAngle), Math.sin(shift.lightAngle)];
  const out = new Uint8Array(side * side);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      let sum = 0;
      for (let oy = -r; oy <= r; oy++) for (let ox = -r; ox <= r; ox++) sum += at(x + ox, y + oy);
      const blurred = sum / ((2 * r + 1) * (2 * r + 1));
      const toned = 255 * (blurred / 255) ** shift.gamma;
      const exposed = shift.brightness + shift.contrast * (toned - 128);
      const [px, py] = [(2 * x) / (side - 1) - 1, (2 * y) / (side - 1) - 1];
      const light = 1 + (shift.lightStrength * (px * dx + py * dy)) / (Math.abs(dx) + Math.abs(dy));
      const corners = 1 - (shift.vignette * (px * px + py * py)) / 2;
      let uniforms = 0;
      for (let k = 0; k < 4; k++) uniforms += (rng.next() % 1000) / 1000;
      const noise = (uniforms - 2) * 1.732 * shift.noise;
      out[y * side + x] = Math.min(255, Math.max(0, Math.round(exposed * light * corners + noise)));
    }
  }
  return out;
}
