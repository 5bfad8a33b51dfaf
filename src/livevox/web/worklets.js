// AudioWorklet processors for the page's WebSocket mode (no build step).
// The AudioContext runs at the device rate (Firefox cannot connect a microphone to a context at
// another rate), so both processors resample to and from the protocol's 24 kHz.

const WIRE_RATE = 24000;

// Microphone -> 24 kHz mono Int16 chunks of ~40 ms, posted to the page.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / WIRE_RATE; // input samples per output sample
    this.pos = 0; // fractional read position into the current block
    this.prev = 0;
    this.out = new Int16Array(WIRE_RATE / 25);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || !input[0]) return true;
    const ch = input[0];
    let sum = 0;
    // Linear interpolation between the previous block's last sample and this block.
    while (this.pos < ch.length) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? this.prev : ch[i - 1];
      const b = ch[i];
      const v = a + (b - a) * frac;
      sum += v * v;
      this.out[this.fill++] = Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
      if (this.fill === this.out.length) {
        this.port.postMessage({ type: "pcm", pcm: this.out.buffer }, [this.out.buffer]);
        this.out = new Int16Array(WIRE_RATE / 25);
        this.fill = 0;
      }
      this.pos += this.step;
    }
    this.pos -= ch.length;
    this.prev = ch[ch.length - 1];
    return true;
  }
}

// 24 kHz Int16 chunks from the page -> speakers. "clear" drops everything queued (barge-in).
// Reports "started" when a response's first non-silent sample plays, and the level it plays at.
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = WIRE_RATE / sampleRate; // wire samples per output sample
    this.queue = [];
    this.cur = null;
    this.pos = 0;
    this.generation = 0;
    this.reported = -1;
    this.levelSum = 0;
    this.levelN = 0;
    this.playedSamples = 0;
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "pcm") {
        this.queue.push(new Int16Array(m.pcm));
      } else if (m.type === "clear") {
        this.queue = [];
        this.cur = null;
        this.pos = 0;
      } else if (m.type === "turn") {
        this.generation = m.generation;
      }
    };
  }

  next() {
    while (this.cur === null || this.pos >= this.cur.length - 1) {
      if (this.cur !== null && this.pos >= this.cur.length - 1) {
        this.pos -= this.cur.length - 1;
      }
      this.cur = this.queue.length ? this.queue.shift() : null;
      if (this.cur === null) {
        this.pos = 0;
        return null;
      }
    }
    const i = Math.floor(this.pos);
    const frac = this.pos - i;
    const v = (this.cur[i] + (this.cur[i + 1] - this.cur[i]) * frac) / 32768;
    this.pos += this.step;
    return v;
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const n = out[0].length;
    let audible = 0;
    for (let k = 0; k < n; k++) {
      const v = this.next();
      const s = v === null ? 0 : v;
      for (let c = 0; c < out.length; c++) out[c][k] = s;
      this.levelSum += s * s;
      this.levelN++;
      if (Math.abs(s) > 0.003) audible++;
    }
    if (audible > 0) {
      this.playedSamples += n;
      if (this.reported !== this.generation) {
        this.reported = this.generation;
        this.port.postMessage({ type: "started", generation: this.generation });
      }
    }
    if (this.levelN >= sampleRate / 20) {
      this.port.postMessage({
        type: "level",
        rms: Math.sqrt(this.levelSum / this.levelN),
        playedMs: (this.playedSamples * 1000) / sampleRate,
      });
      this.levelSum = 0;
      this.levelN = 0;
    }
    return true;
  }
}

registerProcessor("livevox-capture", CaptureProcessor);
registerProcessor("livevox-playback", PlaybackProcessor);
