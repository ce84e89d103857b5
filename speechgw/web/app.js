// speechgw's page: the microphone over the streaming protocol (AudioWorklet -> 16 kHz
// LINEAR16 -> base64 JSON messages), a WAV file over the batch protocol, and any other audio
// file over the OpenAI-compatible HTTP API.
"use strict";

const $ = (id) => document.getElementById(id);
const wsBase = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
const RATE = 16000;
const CHUNK = RATE / 10; // 100 ms per message

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

// The worklet copies each 128-sample render quantum to the page; the page batches them.
const WORKLET = `
registerProcessor("pcm-tap", class extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
});`;

let mic = null; // {ws, context, stream, node, pending: Float32Array[], pendingLength, first}

function toBase64Linear16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    pcm[i] = s < 0 ? s * 32768 : s * 32767;
  }
  let binary = "";
  const bytes = new Uint8Array(pcm.buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function sendPending(force) {
  while (mic && (mic.pendingLength >= CHUNK || (force && mic.pendingLength > 0))) {
    const n = Math.min(CHUNK, mic.pendingLength);
    const chunk = new Float32Array(n);
    let filled = 0;
    while (filled < n) {
      const head = mic.pending[0];
      const take = Math.min(head.length, n - filled);
      chunk.set(head.subarray(0, take), filled);
      filled += take;
      if (take === head.length) mic.pending.shift(); else mic.pending[0] = head.subarray(take);
    }
    mic.pendingLength -= n;
    const message = { audio: toBase64Linear16(chunk) };
    if (mic.first) {
      message.rate = RATE;
      message.language_code = $("language").value;
      message.interim_results = true; // our extension: words while the person speaks
      mic.first = false;
    }
    if (mic.ws.readyState === WebSocket.OPEN) mic.ws.send(JSON.stringify(message));
  }
}

async function startMic() {
  $("mic-start").disabled = true;
  const key = $("api-key").value.trim();
  const url = `${wsBase}/api/core/google/asr${key ? `?api_key=${encodeURIComponent(key)}` : ""}`;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (err) {
    status(`No microphone: ${err.message}`, true);
    $("mic-start").disabled = false;
    return;
  }
  const context = new AudioContext({ sampleRate: RATE }); // the browser resamples the mic
  await context.audioWorklet.addModule(URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" })));
  const ws = new WebSocket(url);
  mic = { ws, context, stream, node: null, pending: [], pendingLength: 0, first: true };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection") {
      status(`Listening (client ${message.clientId}).`);
      const source = context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(context, "pcm-tap");
      node.port.onmessage = (e) => {
        if (!mic) return;
        mic.pending.push(e.data);
        mic.pendingLength += e.data.length;
        sendPending(false);
      };
      source.connect(node);
      mic.node = node;
      $("mic-stop").disabled = false;
    } else if ("asr_interim" in message) {
      // the utterance being spoken: one greyed line, replaced as its words change
      let li = $("utterances").querySelector("li.interim");
      if (!li) {
        li = document.createElement("li");
        li.className = "interim";
        $("utterances").appendChild(li);
      }
      li.textContent = message.asr_interim;
    } else if ("asr_reply" in message) {
      // the final takes the interim's place
      const li = $("utterances").querySelector("li.interim") || document.createElement("li");
      li.className = "";
      li.textContent = message.asr_reply;
      $("utterances").appendChild(li);
    } else if (message.type === "error") {
      status(`Error: ${message.message}${message.detail ? ` (${message.detail})` : ""}`, true);
    }
  };
  ws.onclose = (event) => {
    const normal = event.code === 1000;
    status(normal ? "Stream finished." :
      `Connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""}).` +
      (event.code === 1006 ? " The server refused it or went away: check the API key." : ""),
      !normal);
    stopAudio();
    $("mic-start").disabled = false;
    $("mic-stop").disabled = true;
  };
  ws.onerror = () => status("Connection error.", true);
}

function stopAudio() {
  if (!mic) return;
  if (mic.node) mic.node.disconnect();
  mic.stream.getTracks().forEach((t) => t.stop());
  mic.context.close();
}

function stopMic() {
  if (!mic) return;
  sendPending(true);
  if (mic.node) mic.node.port.onmessage = null;
  if (mic.ws.readyState === WebSocket.OPEN) mic.ws.send(JSON.stringify({ type: "end" }));
  status("Finishing: recognising what is buffered...");
  $("mic-stop").disabled = true;
}

function showResult(result) {
  $("transcript").textContent = result.postprocessed_text || result.text;
  const body = $("segments").querySelector("tbody");
  body.replaceChildren(...result.segments.map((s) => {
    const row = document.createElement("tr");
    row.innerHTML = `<td class="time"></td><td class="time"></td><td></td>`;
    row.children[0].textContent = s.start.toFixed(2);
    row.children[1].textContent = s.end.toFixed(2);
    row.children[2].textContent = s.text;
    return row;
  }));
  $("segments").hidden = false;
  status(`Transcribed ${result.duration.toFixed(1)} s of audio.`);
}

async function sendFile() {
  const file = $("file").files[0];
  if (!file) { status("Choose an audio file first.", true); return; }
  const data = await file.arrayBuffer();
  const head = new Uint8Array(data.slice(0, 12));
  const text = String.fromCharCode(...head);
  if (text.startsWith("RIFF") && text.endsWith("WAVE")) sendWav(file, data);
  else await sendOther(file);
}

// anything but WAV (mp3, m4a, ogg, webm, flac...): the OpenAI-compatible HTTP API, where the
// server decodes it
async function sendOther(file) {
  status(`Sending ${file.name} (OpenAI-compatible API)...`);
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  try {
    // the first model name the routing offers (whisper-1 unless the admin named others)
    const models = await fetch("/v1/models", { headers });
    const listed = await models.json();
    if (!models.ok) { status(`Error: ${listed.error.code}: ${listed.error.message}`, true); return; }
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("model", listed.data[0].id);
    form.append("response_format", "verbose_json");
    if ($("language").value) form.append("language", $("language").value);
    const response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form, headers });
    const result = await response.json();
    if (!response.ok) { status(`Error: ${result.error.code}: ${result.error.message}`, true); return; }
    showResult(result);
  } catch (error) {
    status(`Error: ${error}`, true);
  }
}

function sendWav(file, wav) {
  const ws = new WebSocket(`${wsBase}/ws/transcribe`);
  ws.binaryType = "arraybuffer";
  let answered = false;
  status(`Sending ${file.name}...`);
  ws.onopen = () => {
    const metadata = { type: "transcribe", language: $("language").value, task: "transcribe" };
    const key = $("api-key").value.trim();
    if (key) metadata.api_key = key;
    ws.send(JSON.stringify(metadata));
    ws.send(wav);
  };
  ws.onmessage = (event) => {
    answered = true;
    const result = JSON.parse(event.data);
    if (result.error) { status(`Error: ${result.error}: ${result.message}`, true); return; }
    showResult(result);
  };
  ws.onclose = (event) => {
    if (!answered) status(`Connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""}).`, true);
  };
}

$("mic-start").onclick = startMic;
$("mic-stop").onclick = stopMic;
$("file-send").onclick = sendFile;
