// Calibrating in the tab, through the package's `calibrate`, under shifts in appearance the
// method was not tuned on (drawn from seed 100 on, as tests/calibration.rs draws them natively):
// the bar, on real FER2013 faces with no FER2013 file in the tab. Each "person" is 30
// PublicTest faces per expression seen through one shift (the captures; the library holds out
// the last quarter of each expression's to score itself) and 40 more per expression (fresh
// faces). A shift that costs the fast model under 15 points leaves little to gain and is passed
// over, as natively. For three shifts: the calibration is kept, the held-out captures gain at
// least 10 points, fresh faces under the shift gain, and the captures and the fresh faces
// without the shift lose at most 5 points. Needs ../shared/fer2013 (or FER2013_CSV).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { promisify } from 'node:util';
import { serve } from './harness.mjs';
import { inChromium, staticAppWith } from './package-app.mjs';
import { Lcg, applyShift, drawShift } from './shift.mjs';

const FER2013 = process.env.FER2013_CSV ??
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared/fer2013/fer2013-train-publictest.csv.gz');
const CAPTURES_PER_CLASS = 30;
const FRESH_PER_CLASS = 40;
const LEAST_GAIN = 0.10;
const MOST_LOSS = 0.05;

/** FER2013's PublicTest faces by class, in file order. */
async function publicTestByClass() {
  let bytes = await fs.readFile(FER2013);
  if (FER2013.endsWith('.gz')) bytes = await promisify(zlib.gunzip)(bytes);
  const byClass = Array.from({ length: 7 }, () => []);
  for (const line of bytes.toString('latin1').split('\n')) {
    if (!line.endsWith('PublicTest') && !line.endsWith('PublicTest\r')) continue;
    const [emotion, pixels] = line.split(',');
    byClass[Number(emotion)].push(Uint8Array.from(pixels.split(' ').map(Number)));
  }
  return byClass;
}

/** One person under `shift` (tests/calibration.rs's `person`). */
function person(byClass, shift, seed) {
  const rng = new Lcg(seed);
  const sets = { captures: { faces: [], labels: [] }, capturesUnshifted: { faces: [], labels: [] }, fresh: { faces: [], labels: [] }, freshUnshifted: { faces: [], labels: [] } };
  byClass.forEach((faces, label) => {
    const take = Math.min(CAPTURES_PER_CLASS, Math.floor(faces.length / 2));
    faces.slice(0, take + FRESH_PER_CLASS).forEach((face, i) => {
      const [shifted, plain] = i < take ? ['captures', 'capturesUnshifted'] : ['fresh', 'freshUnshifted'];
      sets[shifted].faces.push(Array.from(applyShift(shift, face, rng)));
      sets[shifted].labels.push(label);
      sets[plain].faces.push(Array.from(face));
      sets[plain].labels.push(label);
    });
  });
  return sets;
}

let app;
before(async () => { app = await staticAppWith(); });
after(async () => { if (app) await fs.rm(app, { recursive: true, force: true }); });

test('calibration in the tab: three shifts it was not tuned on gain 10 points on held-out captures and lose at most 5 without the shift', async () => {
  const byClass = await publicTestByClass();
  const server = await serve(app, { isolated: false, encodings: [] });
  try {
    let held = 0;
    for (let seed = 100; held < 3; seed++) {
      assert.ok(seed < 120, 'too few of the drawn shifts cost the model 15 points');
      const shift = drawShift(new Lcg(seed));
      const someone = person(byClass, shift, seed);
      const { before: b, after: a, accepted, reason, heldOut, referenceFaces, seconds } = await inChromium(server.url, 'calibrateShifted', someone);
      if (b.fresh > b.freshUnshifted - 0.15) continue;
      held += 1;
      const pct = (x) => `${(100 * x).toFixed(1)}%`;
      console.log(`seed ${seed} ${JSON.stringify(shift)}: held-out ${pct(heldOut.before)} → ${pct(heldOut.after)}; ` +
        (a ? `fresh ${pct(b.fresh)} → ${pct(a.fresh)}; unshifted captures ${pct(b.capturesUnshifted)} → ${pct(a.capturesUnshifted)}, fresh ${pct(b.freshUnshifted)} → ${pct(a.freshUnshifted)}; ` : '') +
        `reference faces read personally ${pct(referenceFaces.readPersonally)}; ${seconds.toFixed(1)} s`);
      assert.ok(accepted, `kept (seed ${seed}): ${reason}`);
      assert.ok(heldOut.after >= heldOut.before + LEAST_GAIN, `held-out captures (seed ${seed}): ${heldOut.before} → ${heldOut.after}`);
      assert.ok(a.fresh > b.fresh, `fresh faces under the shift gain (seed ${seed}): ${b.fresh} → ${a.fresh}`);
      assert.ok(a.capturesUnshifted >= b.capturesUnshifted - MOST_LOSS, `captures without the shift (seed ${seed}): ${b.capturesUnshifted} → ${a.capturesUnshifted}`);
      assert.ok(a.freshUnshifted >= b.freshUnshifted - MOST_LOSS, `fresh faces without the shift (seed ${seed}): ${b.freshUnshifted} → ${a.freshUnshifted}`);
    }
  } finally {
    await server.close();
  }
});
