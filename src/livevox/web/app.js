// livevox browser page: talk to the agent over the Voice Live WebRTC door (default) or over the
// Voice Live WebSocket (AudioWorklet capture and playback). Plain ES module, no build step.

const $ = (id) => document.getElementById(id);
const API_VERSION = "2026-01-01-preview";
const MODEL = "gpt-realtime";
const MIC_SPEECH_RMS = 0.01; // local "the user is talking" level, for the latency measure
const AGENT_AUDIO_RMS = 0.003; // received agent audio counts as audible above this

let call = null; // the live connection, or null

// ------------------------------------------------------------------ small helpers

function wsUrl(path) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  u.searchParams.set("api-version", API_VERSION);
  u.searchParams.set("model", MODEL);
  u.searchParams.set("livevox-latency-events", "1"); // per-turn stage timings, for the waterfall
  const key = $("api-key").value.trim();
  if (key) u.searchParams.set("api-key", key);
  return u.toString();
}

function setConn(text, stateName) {
  const el = $("conn");
  el.textContent = text;
  el.dataset.state = stateName;
}

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

function sessionConfig() {
  const voice = $("voice").value.trim() || "alloy";
  let turn = $("turn").value;
  if (turn === "server_vad" && $("semantic").checked) turn = "azure_semantic_vad";
  const silence = Math.max(100, parseInt($("silence").value, 10) || 500);
  const td = turn === "none" ? null : { type: turn, silence_duration_ms: silence };
  if (td && turn.startsWith("azure_semantic")) td.remove_filler_words = $("fillers").checked;
  return {
    instructions: $("instructions").value,
    voice: /neural|:/i.test(voice) ? { name: voice, type: "azure-standard" } : voice,
    turn_detection: td,
    input_audio_transcription: { model: "whisper-1" },
    input_audio_noise_reduction: $("noise").checked ? { type: "azure_deep_noise_suppression" } : null,
    input_audio_echo_cancellation: $("echo").checked ? { type: "server_echo_cancellation" } : null,
  };
}

function rms(analyser, buf) {
  analyser.getFloatTimeDomainData(buf);
  let s = 0;
  for (let i = 0; i < buf.length; i++) s += buf[i] * buf[i];
  return Math.sqrt(s / buf.length);
}

function b64FromInt16(pcm) {
  const bytes = new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

function int16FromB64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Int16Array(bytes.buffer, 0, bytes.length >> 1);
}

// ------------------------------------------------------------------ conversation view

const bubbles = new Map(); // item_id -> element

function bubble(itemId, who) {
  let el = bubbles.get(itemId);
  if (!el) {
    el = document.createElement("div");
    el.className = `msg ${who}`;
    el.dataset.itemId = itemId;
    el.innerHTML = `<span class="who">${who === "user" ? "You" : "Agent"}</span><span class="text"></span>`;
    $("transcript").appendChild(el);
    bubbles.set(itemId, el);
  }
  return el;
}

function setText(itemId, who, text, final) {
  const el = bubble(itemId, who);
  el.querySelector(".text").textContent = text;
  if (final) el.dataset.final = "true";
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

function appendText(itemId, who, delta) {
  const el = bubble(itemId, who);
  const t = el.querySelector(".text");
  t.textContent = (t.textContent === "…" ? "" : t.textContent) + delta;
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

// ------------------------------------------------------------------ latency and levels

const latency = { pending: null, values: [], lastMicSpeech: 0, agentMs: 0 };

function markTurnEnded() {
  // End of the user's speech as the client heard it (local mic level), else now.
  const end = latency.lastMicSpeech && performance.now() - latency.lastMicSpeech < 5000
    ? latency.lastMicSpeech : performance.now();
  latency.pending = { end };
}

function agentAudioStarted() {
  if (DEBUG) console.log(`${performance.now().toFixed(0)} agent audio`);
  if (!latency.pending) return;
  const ms = Math.round(performance.now() - latency.pending.end);
  latency.pending = null;
  if (call && call.responseId) heardInBrowser(call.responseId, ms);
  latency.values.push(ms);
  const sorted = [...latency.values].sort((a, b) => a - b);
  $("latency-last").textContent = `${ms} ms`;
  $("latency-last").dataset.ms = String(ms);
  $("latency-median").textContent = `${sorted[Math.floor(sorted.length / 2)]} ms`;
  $("latency-count").textContent = String(latency.values.length);
}

function agentLevel(level, frameMs) {
  $("agent-level").value = Math.min(1, level * 8);
  if (level > AGENT_AUDIO_RMS) {
    if (!call || !call.agentAudible) {
      if (call) call.agentAudible = true;
      agentAudioStarted();
    }
    latency.agentMs += frameMs;
    const played = $("agent-played");
    played.dataset.ms = String(Math.round(latency.agentMs));
    played.textContent = `${(latency.agentMs / 1000).toFixed(1)} s`;
  } else if (call) {
    call.agentAudible = false;
  }
}

function micLevel(level) {
  $("mic-level").value = Math.min(1, level * 8);
  if (DEBUG && level > MIC_SPEECH_RMS) console.log(`${performance.now().toFixed(0)} mic ${level.toFixed(3)}`);
  if (level > MIC_SPEECH_RMS) latency.lastMicSpeech = performance.now();
}

// ------------------------------------------------------------------ waterfall of a turn's stages

// livevox.turn.metrics marks (ms after the end of the user's speech), in pipeline order (ties keep it).
const STAGES = [
  ["speech_end", "end of speech"],
  ["eot_decision", "end-of-turn decision"],
  ["transcript_final", "transcript"],
  ["llm_first_token", "first LLM token"],
  ["first_clause", "first clause"],
  ["tts_first_audio", "first TTS audio"],
  ["first_audio_sent", "first audio sent"],
];
const WATERFALL_TURNS = 5;
const turns = new Map(); // response_id -> { stages, heardMs, el }

function turnEntry(responseId) {
  let t = turns.get(responseId);
  if (!t) {
    t = { stages: null, heardMs: null, el: null };
    turns.set(responseId, t);
    if (turns.size > 50) turns.delete(turns.keys().next().value); // responses that never drew
  }
  return t;
}

function turnMetrics(ev) {
  if (!ev.response_id || !ev.stages_ms) return;
  const t = turnEntry(ev.response_id);
  t.stages = ev.stages_ms;
  drawTurn(ev.response_id, t);
}

// The browser's own measure usually comes before the server's event (sent after response.done).
function heardInBrowser(responseId, ms) {
  const t = turnEntry(responseId);
  t.heardMs = ms;
  if (t.stages) drawTurn(responseId, t);
}

function drawTurn(responseId, t) {
  const rows = STAGES.filter(([k]) => typeof t.stages[k] === "number")
    .map(([k, label]) => ({ stage: k, label, ms: t.stages[k] }))
    .sort((a, b) => a.ms - b.ms); // in time order: the transcript may be final before the end-of-turn decision
  // Measured on the browser's clock from its own end of speech: includes network and playback.
  if (t.heardMs !== null) rows.push({ stage: "browser", label: "heard in the browser", ms: t.heardMs });
  const scale = Math.max(1, ...rows.map((r) => r.ms));
  const box = $("waterfall");
  const el = t.el || document.createElement("div");
  el.className = "turn";
  el.dataset.responseId = responseId;
  el.dataset.scaleMs = String(scale);
  el.replaceChildren();
  const head = document.createElement("div");
  head.className = "turn-head";
  head.textContent = `Turn ${responseId}`;
  el.append(head);
  let prev = 0;
  for (const r of rows) {
    const row = document.createElement("div");
    row.className = "stage";
    row.dataset.stage = r.stage;
    row.dataset.ms = String(r.ms);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = r.label;
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    const width = Math.max(0, r.ms) / scale;
    bar.style.width = `${(width * 100).toFixed(3)}%`;
    // the part since the previous row is this stage's own time
    const own = document.createElement("span");
    own.className = "own";
    own.style.width = `${r.ms > 0 ? (100 * Math.min(1, Math.max(0, r.ms - prev) / r.ms)).toFixed(3) : 0}%`;
    bar.append(own);
    track.append(bar);
    const num = document.createElement("span");
    num.className = "ms";
    const step = Math.round(r.ms - prev);
    num.textContent = `${Math.round(r.ms)} ms` + (r.stage !== "speech_end" && step > 0 ? ` (+${step})` : "");
    row.append(label, " ", track, " ", num); // the spaces: read as "transcript 903 ms" (grids drop them)
    el.append(row);
    prev = r.ms;
  }
  if (!t.el) {
    t.el = el;
    box.querySelector(".placeholder")?.remove();
    box.prepend(el); // newest first
    for (const old of [...box.querySelectorAll(".turn")].slice(WATERFALL_TURNS)) old.remove();
  }
}

// ------------------------------------------------------------------ server events

const DEBUG = new URLSearchParams(location.search).has("debug");

function handleEvent(ev) {
  if (DEBUG) console.log(`${performance.now().toFixed(0)} ${ev.type}`);
  if (call && ev.event_id) {
    if (call.seen.has(ev.event_id)) return; // the same event may arrive on both channels
    call.seen.add(ev.event_id);
  }
  switch (ev.type) {
    case "session.created":
      setConn(call && call.mode === "webrtc" ? "negotiating" : "connected",
        call && call.mode === "webrtc" ? "connecting" : "connected");
      break;
    case "rtc.call.sdp.created":
      call.pc.setRemoteDescription({ type: "answer", sdp: ev.sdp_answer }).catch((e) => showError(`answer: ${e}`));
      break;
    case "rtc.call.error":
      showError(`WebRTC: ${ev.error.code}: ${ev.error.message}`);
      setConn("failed", "failed");
      break;
    case "error":
      showError(`${ev.error.code}: ${ev.error.message}`);
      break;
    case "input_audio_buffer.speech_started":
      $("vad").textContent = "user speaking";
      $("vad").dataset.state = "speaking";
      setText(ev.item_id, "user", "…", false);
      if (call && call.playback) call.playback.port.postMessage({ type: "clear" });
      break;
    case "input_audio_buffer.speech_stopped":
      $("vad").textContent = "silence";
      $("vad").dataset.state = "silence";
      markTurnEnded();
      if (call && call.playback) call.playback.port.postMessage({ type: "turn", generation: ++call.generation });
      break;
    case "conversation.item.input_audio_transcription.delta":
      appendText(ev.item_id, "user", ev.delta);
      break;
    case "conversation.item.input_audio_transcription.completed":
      setText(ev.item_id, "user", ev.transcript || "(nothing heard)", true);
      break;
    case "conversation.item.input_audio_transcription.failed":
      setText(ev.item_id, "user", "(transcription failed)", true);
      break;
    case "response.audio_transcript.delta":
    case "response.text.delta":
      appendText(ev.item_id, "agent", ev.delta);
      break;
    case "response.audio_transcript.done":
      setText(ev.item_id, "agent", ev.transcript, true);
      break;
    case "response.text.done":
      setText(ev.item_id, "agent", ev.text, true);
      break;
    case "response.audio.delta":
      if (call && call.playback) {
        const pcm = int16FromB64(ev.delta);
        call.playback.port.postMessage({ type: "pcm", pcm: pcm.buffer }, [pcm.buffer]);
      }
      break;
    case "output_audio_buffer.started":
      $("agent-state").textContent = "speaking";
      $("agent-state").dataset.state = "speaking";
      break;
    case "output_audio_buffer.stopped":
    case "output_audio_buffer.cleared":
      $("agent-state").textContent = "quiet";
      $("agent-state").dataset.state = "idle";
      break;
    case "response.created":
      if (call) call.responseId = ev.response && ev.response.id;
      if (call && call.mode === "websocket") {
        $("agent-state").textContent = "speaking";
        $("agent-state").dataset.state = "speaking";
      }
      break;
    case "response.done":
      if (call && call.mode === "websocket") {
        $("agent-state").textContent = "quiet";
        $("agent-state").dataset.state = "idle";
      }
      break;
    case "livevox.turn.metrics":
      turnMetrics(ev);
      break;
    default:
      break;
  }
}

function onMessage(data) {
  try {
    handleEvent(JSON.parse(data));
  } catch (e) {
    console.error("bad event", e, data);
  }
}

function send(ev) {
  if (!call) return;
  const text = JSON.stringify(ev);
  if (call.dc && call.dc.readyState === "open") call.dc.send(text);
  else if (call.ws && call.ws.readyState === WebSocket.OPEN) call.ws.send(text);
}

// ------------------------------------------------------------------ connecting

async function openMic() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("no microphone access: open the page as http://localhost or over HTTPS");
  }
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
}

// An AudioContext at the microphone's rate: Firefox cannot connect a microphone to a context
// running at another rate.
function audioContextFor(mic) {
  const rate = mic.getAudioTracks()[0]?.getSettings().sampleRate;
  let ctx;
  try {
    ctx = rate ? new AudioContext({ sampleRate: rate }) : new AudioContext();
  } catch {
    ctx = new AudioContext();
  }
  ctx.resume().catch(() => {}); // started from the Talk click (a user gesture)
  return ctx;
}

function startMeters(ctx, micStream) {
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  try {
    ctx.createMediaStreamSource(micStream).connect(analyser);
  } catch (e) {
    console.warn("no microphone meter:", e); // latency then counts from speech_stopped
    return setInterval(() => {}, 1000);
  }
  const buf = new Float32Array(analyser.fftSize);
  return setInterval(() => micLevel(rms(analyser, buf)), 20);
}

function waitIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs); // send what we have (non-trickle)
  });
}

async function startWebRTC() {
  const mic = await openMic();
  const ctx = audioContextFor(mic);
  const ws = new WebSocket(wsUrl("/voice-live/realtime/calls"));
  const pc = new RTCPeerConnection({ iceServers: [] });
  call = { mode: "webrtc", ctx, mic, ws, pc, dc: null, seen: new Set(), timers: [], agentAudible: false };
  call.timers.push(startMeters(ctx, mic));
  for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
  // How much microphone audio has gone out as RTP (20 ms packets), as the WebSocket mode counts its appends.
  call.timers.push(setInterval(() => {
    pc.getStats().then((stats) => {
      stats.forEach((r) => {
        if (r.type === "outbound-rtp" && (r.kind || r.mediaType) === "audio") {
          $("conn").dataset.micMs = String((r.packetsSent || 0) * 20);
        }
      });
    }).catch(() => {});
  }, 200));
  const dc = pc.createDataChannel("voice-live-events");
  call.dc = dc;
  dc.onmessage = (e) => onMessage(e.data);
  dc.onopen = () => setConn("connected", "connected");
  pc.ontrack = (e) => {
    const stream = e.streams[0] || new MediaStream([e.track]);
    const audio = $("agent-audio");
    audio.srcObject = stream;
    audio.play().catch(() => {});
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    call.timers.push(setInterval(() => agentLevel(rms(analyser, buf), 20), 20));
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed" || pc.connectionState === "closed") setConn(pc.connectionState, pc.connectionState);
  };
  ws.onmessage = (e) => onMessage(e.data);
  ws.onclose = () => { if (call && call.ws === ws) stop("closed"); };
  ws.onerror = () => showError("The control WebSocket failed (is the server running? API key?).");
  setConn("connecting", "connecting");
  await pc.setLocalDescription(await pc.createOffer());
  await waitIceGathering(pc, 3000);
  await new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.OPEN) resolve();
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("close", () => reject(new Error("control WebSocket closed")), { once: true });
  });
  ws.send(JSON.stringify({ type: "rtc.call.sdp.create", sdp_offer: pc.localDescription.sdp, session: sessionConfig() }));
}

async function startWebSocket() {
  const mic = await openMic();
  const ctx = audioContextFor(mic);
  await ctx.audioWorklet.addModule("/web/worklets.js");
  const ws = new WebSocket(wsUrl("/voice-live/realtime"));
  call = { mode: "websocket", ctx, mic, ws, pc: null, dc: null, seen: new Set(), timers: [], generation: 0,
    agentAudible: false };
  call.timers.push(startMeters(ctx, mic));
  const capture = new AudioWorkletNode(ctx, "livevox-capture", { numberOfInputs: 1, numberOfOutputs: 1 });
  const sink = ctx.createGain();
  sink.gain.value = 0;
  ctx.createMediaStreamSource(mic).connect(capture).connect(sink).connect(ctx.destination);
  const playback = new AudioWorkletNode(ctx, "livevox-playback", { numberOfInputs: 0, numberOfOutputs: 1,
    outputChannelCount: [1] });
  playback.connect(ctx.destination);
  call.playback = playback;
  let lastPlayed = 0;
  playback.port.onmessage = (e) => {
    const m = e.data;
    if (m.type === "level") {
      const frameMs = m.playedMs - lastPlayed;
      lastPlayed = m.playedMs;
      agentLevel(frameMs > 0 ? Math.max(m.rms, AGENT_AUDIO_RMS * 1.01) : m.rms, frameMs);
    }
  };
  let sentSamples = 0;
  capture.port.onmessage = (e) => {
    if (ws.readyState === WebSocket.OPEN && e.data.type === "pcm") {
      const pcm = new Int16Array(e.data.pcm);
      ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: b64FromInt16(pcm) }));
      sentSamples += pcm.length;
      $("conn").dataset.micMs = String(Math.round(sentSamples / 24)); // how much microphone audio went out
    }
  };
  ws.onopen = () => {
    setConn("connected", "connected");
    ws.send(JSON.stringify({ type: "session.update", session: { ...sessionConfig(), input_audio_format: "pcm16",
      output_audio_format: "pcm16" } }));
  };
  ws.onmessage = (e) => onMessage(e.data);
  ws.onclose = () => { if (call && call.ws === ws) stop("closed"); };
  ws.onerror = () => showError("The WebSocket failed (is the server running? API key?).");
  setConn("connecting", "connecting");
}

function stop(reason) {
  const c = call;
  call = null;
  if (!c) return;
  for (const t of c.timers) clearInterval(t);
  if (c.dc) c.dc.close();
  if (c.pc) c.pc.close();
  if (c.ws && c.ws.readyState <= WebSocket.OPEN) c.ws.close(1000, "bye");
  for (const t of c.mic.getTracks()) t.stop();
  c.ctx.close();
  $("agent-audio").srcObject = null;
  $("talk").textContent = "Talk";
  $("talk").setAttribute("aria-pressed", "false");
  $("vad").textContent = "idle";
  $("vad").dataset.state = "idle";
  setConn(reason || "idle", reason === "closed" ? "closed" : "idle");
}

$("talk").addEventListener("click", async () => {
  if (call) {
    stop("idle");
    return;
  }
  showError("");
  $("talk").textContent = "Stop";
  $("talk").setAttribute("aria-pressed", "true");
  try {
    if ($("mode").value === "websocket") await startWebSocket();
    else await startWebRTC();
  } catch (e) {
    showError(`Could not start: ${e.message || e}`);
    stop("failed");
    setConn("failed", "failed");
  }
});

$("apply").addEventListener("click", () => send({ type: "session.update", session: sessionConfig() }));

const params = new URLSearchParams(location.search);
if (params.get("mode") === "websocket") $("mode").value = "websocket";
