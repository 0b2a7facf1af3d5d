// A camera the test controls, for the calibration tests: getUserMedia answers a
// canvas.captureStream() that films one face (the best-found face of tests/fixtures/
// face_scene.pgm, enlarged as the camera tests enlarge it) posing the expression the page is
// asking for (#calibrate's data-expression; otherwise window.testExpression, otherwise
// Neutral). Each expression is drawn on that face (mouth, brows, nose lines), and every frame
// goes through one consistent shift in appearance that FER2013's faces do not have: a warm
// colour cast, blur, low contrast, light from the left and fresh sensor noise per frame.
// The page counts the frames drawn in window.testCameraFrames.
import { readScene } from './face-scene.mjs';

// Where the face (a 48x48 FER2013 face, 1.83x) is in the 320x240 scene: the tracked face
// is enlarged 2x, as in the camera tests, and cut out with a margin of the scene's gradient.
const FACE = { left: 214, top: 24, side: 88 };
const MARGIN = 8;

/** The argument for `fakeCamera`: the scene's face with its margin, `{ side, margin, grey }`. */
export async function fakeCameraArgument() {
  const scene = await readScene();
  const side = FACE.side + 2 * MARGIN;
  const grey = [];
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) grey.push(scene.grey[(FACE.top - MARGIN + y) * scene.width + FACE.left - MARGIN + x]);
  }
  return { side, margin: MARGIN, grey };
}

/** The init script (page.addInitScript(fakeCamera, await fakeCameraArgument())); runs in the page. */
export function fakeCamera({ side, margin, grey }) {
  const WIDTH = 640;
  const HEIGHT = 480;
  const SCALE = 2;
  const faceLeft = (WIDTH - side * SCALE) / 2 + margin * SCALE;
  const faceTop = (HEIGHT - side * SCALE) / 2 + margin * SCALE;
  const faceSide = (side - 2 * margin) * SCALE;
  window.testCameraFrames = 0;

  const asked = () => {
    const value = document.querySelector('#calibrate')?.dataset.expression ?? window.testExpression;
    return value == null ? 6 : Number(value);
  };

  // Strokes in face units (0..1 across the face square): [x, y] points.
  const DARK = 'rgb(25,25,25)';
  const LIGHT = 'rgb(235,235,235)';
  function line(ctx, points, width, colour = DARK) {
    ctx.beginPath();
    ctx.moveTo(...points[0]);
    for (let i = 1; i < points.length; i += 2) ctx.quadraticCurveTo(...points[i], ...points[i + 1]);
    ctx.lineWidth = width;
    ctx.strokeStyle = colour;
    ctx.lineCap = 'round';
    ctx.stroke();
  }
  function ellipse(ctx, x, y, rx, ry, colour) {
    ctx.beginPath();
    ctx.ellipse(x, y, rx, ry, 0, 0, 2 * Math.PI);
    ctx.fillStyle = colour;
    ctx.fill();
  }
  const EXPRESSIONS = [
    (ctx) => { // Angry: brows down to the middle, lips pressed
      line(ctx, [[0.15, 0.15], [0.27, 0.18], [0.39, 0.26]], 0.045);
      line(ctx, [[0.51, 0.24], [0.63, 0.16], [0.77, 0.12]], 0.045);
      line(ctx, [[0.33, 0.76], [0.47, 0.73], [0.61, 0.75]], 0.035);
    },
    (ctx) => { // Disgust: nose wrinkled, upper lip raised on one side
      line(ctx, [[0.35, 0.44], [0.36, 0.49], [0.39, 0.53]], 0.02);
      line(ctx, [[0.51, 0.44], [0.49, 0.49], [0.46, 0.53]], 0.02);
      ellipse(ctx, 0.52, 0.71, 0.09, 0.035, LIGHT);
      line(ctx, [[0.33, 0.75], [0.42, 0.70], [0.52, 0.66], [0.58, 0.66], [0.62, 0.70]], 0.03);
      line(ctx, [[0.17, 0.24], [0.27, 0.24], [0.37, 0.27]], 0.035);
    },
    (ctx) => { // Fear: brows up and together, lips stretched open
      line(ctx, [[0.17, 0.17], [0.27, 0.10], [0.38, 0.14]], 0.035);
      line(ctx, [[0.51, 0.12], [0.62, 0.06], [0.75, 0.13]], 0.035);
      ellipse(ctx, 0.47, 0.76, 0.17, 0.045, DARK);
      ellipse(ctx, 0.47, 0.745, 0.13, 0.015, LIGHT);
    },
    (ctx) => { // Happy: a broad smile with teeth
      ctx.beginPath();
      ctx.moveTo(0.28, 0.68);
      ctx.quadraticCurveTo(0.47, 0.74, 0.66, 0.66);
      ctx.quadraticCurveTo(0.47, 0.92, 0.28, 0.68);
      ctx.fillStyle = LIGHT;
      ctx.fill();
      ctx.lineWidth = 0.025;
      ctx.strokeStyle = DARK;
      ctx.stroke();
      line(ctx, [[0.20, 0.58], [0.24, 0.64], [0.27, 0.70]], 0.02);
      line(ctx, [[0.73, 0.56], [0.70, 0.62], [0.67, 0.68]], 0.02);
    },
    (ctx) => { // Sad: inner brows raised, mouth turned down
      line(ctx, [[0.15, 0.25], [0.27, 0.21], [0.38, 0.13]], 0.035);
      line(ctx, [[0.51, 0.11], [0.63, 0.16], [0.77, 0.21]], 0.035);
      line(ctx, [[0.31, 0.82], [0.47, 0.70], [0.63, 0.81]], 0.035);
    },
    (ctx) => { // Surprise: brows high, jaw dropped
      line(ctx, [[0.15, 0.14], [0.27, 0.04], [0.39, 0.12]], 0.035);
      line(ctx, [[0.50, 0.10], [0.62, 0.01], [0.77, 0.09]], 0.035);
      ellipse(ctx, 0.47, 0.79, 0.08, 0.12, DARK);
    },
    () => {}, // Neutral: the face as it is
  ];

  /** The expression's picture, shifted, before noise: RGBA bytes. */
  function picture(expression) {
    const canvas = new OffscreenCanvas(WIDTH, HEIGHT);
    const ctx = canvas.getContext('2d');
    const gradient = ctx.createLinearGradient(0, 0, WIDTH, HEIGHT);
    gradient.addColorStop(0, 'rgb(80,80,80)');
    gradient.addColorStop(1, 'rgb(170,170,170)');
    ctx.fillStyle = gradient;
    ctx.fillRect(0, 0, WIDTH, HEIGHT);
    const small = new OffscreenCanvas(side, side);
    const pixels = new ImageData(side, side);
    grey.forEach((v, i) => { pixels.data.set([v, v, v, 255], 4 * i); });
    small.getContext('2d').putImageData(pixels, 0, 0);
    ctx.imageSmoothingEnabled = false; // nearest neighbour, as the camera tests enlarge
    ctx.drawImage(small, (WIDTH - side * SCALE) / 2, (HEIGHT - side * SCALE) / 2, side * SCALE, side * SCALE);
    ctx.save();
    ctx.translate(faceLeft, faceTop);
    ctx.scale(faceSide, faceSide);
    EXPRESSIONS[expression](ctx);
    ctx.restore();
    // The shift: blurred, then low contrast, lit from the left, with a warm cast.
    const blurred = new OffscreenCanvas(WIDTH, HEIGHT);
    const blurredContext = blurred.getContext('2d');
    blurredContext.filter = 'blur(1.5px)';
    blurredContext.drawImage(canvas, 0, 0);
    const image = blurredContext.getImageData(0, 0, WIDTH, HEIGHT);
    const data = image.data;
    for (let i = 0; i < WIDTH * HEIGHT; i++) {
      const x = i % WIDTH;
      const light = 55 * (1 - x / WIDTH) - 20;
      const v = 128 + 0.55 * (data[4 * i] - 128) + light;
      data[4 * i] = 1.1 * v + 20;
      data[4 * i + 1] = 0.95 * v + 4;
      data[4 * i + 2] = 0.7 * v;
    }
    return data;
  }

  const pictures = new Map();
  navigator.mediaDevices.getUserMedia = async () => {
    const canvas = document.createElement('canvas');
    canvas.width = WIDTH;
    canvas.height = HEIGHT;
    const ctx = canvas.getContext('2d');
    const frame = ctx.createImageData(WIDTH, HEIGHT);
    // Sensor noise: a table of roughly Gaussian values (sd 8), read from a new place each frame.
    const noise = new Int8Array(WIDTH * HEIGHT + 65536);
    for (let i = 0; i < noise.length; i++) noise[i] = Math.round(((Math.random() + Math.random() + Math.random()) - 1.5) * 16);
    const draw = () => {
      const expression = asked();
      if (!pictures.has(expression)) pictures.set(expression, picture(expression));
      const source = pictures.get(expression);
      const out = frame.data;
      const offset = Math.floor(Math.random() * 65536);
      for (let i = 0, p = 0; i < WIDTH * HEIGHT; i++, p += 4) {
        const n = noise[i + offset];
        out[p] = source[p] + n;
        out[p + 1] = source[p + 1] + n;
        out[p + 2] = source[p + 2] + n;
        out[p + 3] = 255;
      }
      ctx.putImageData(frame, 0, 0);
      window.testCameraFrames += 1;
    };
    draw();
    const timer = setInterval(draw, 33);
    const stream = canvas.captureStream(30);
    const [track] = stream.getVideoTracks();
    const stop = track.stop.bind(track);
    track.stop = () => {
      clearInterval(timer);
      stop();
    };
    return stream;
  };
}
