#!/usr/bin/env node
// A Node.js client of both speechgw protocols, with the `ws` package (npm install).
//
//   node client.mjs batch recording.wav [--language de] [--task translate]
//   node client.mjs stream recording.wav [--language-code en-US] [--speed 1] [--interim]
//   options: --url ws://localhost:8765   --api-key KEY (or SPEECHGW_API_KEY)
//
// batch sends any WAV file as it is and prints the transcript; stream sends a 16-bit mono WAV
// in 100 ms chunks of base64 LINEAR16 (at real-time pace unless --speed 0) and prints each
// utterance as it arrives; with --interim, also the words so far of the utterance being spoken
// (speechgw's asr_interim extension), on stderr, marked "...".
import { readFileSync } from "node:fs";
import WebSocket from "ws";

const [mode, file, ...rest] = process.argv.slice(2);
const option = (name, fallback) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : fallback;
};
const url = option("url", "ws://localhost:8765");
const interim = rest.includes("--interim");
const apiKey = option("api-key", process.env.SPEECHGW_API_KEY);
// perMessageDeflate: false — audio does not compress, and deflating it only costs CPU
const wsOptions = { perMessageDeflate: false, maxPayload: 0 };

function fail(message) {
  console.error(message);
  process.exit(1);
}

// the file's bytes, read before connecting; a missing or unreadable file is one line
function readAudio() {
  try {
    return readFileSync(file);
  } catch (err) {
    fail(`${file}: ${err.code === "ENOENT" ? "no such file" : err.message}`);
  }
}

// the server's URL with an endpoint's path; a URL that names the endpoint already works too
function endpoint(path) {
  const base = url.replace(/\/+$/, "");
  return base.endsWith(path) ? base : base + path;
}

// an answer other than the upgrade: a wrong key (401), no place free (429, 503), a wrong URL
function refused(request, response) {
  let body = "";
  response.on("data", (piece) => (body += piece));
  response.on("end", () => fail(`refused: HTTP ${response.statusCode}: ${body}`));
}

function batch() {
  const audio = readAudio();
  const ws = new WebSocket(endpoint("/ws/transcribe"), wsOptions);
  ws.on("unexpected-response", refused);
  ws.on("open", () => {
    const metadata = { type: "transcribe", language: option("language", "en"),
                       task: option("task", "transcribe") };
    if (apiKey) metadata.api_key = apiKey;
    ws.send(JSON.stringify(metadata));
    ws.send(audio);
  });
  ws.on("message", (data) => {
    const result = JSON.parse(data.toString());
    if (result.error) fail(`error: ${result.error}: ${result.message}`);
    console.log(result.postprocessed_text || result.text);
    for (const s of result.segments) {
      console.error(`  [${s.start.toFixed(2)} - ${s.end.toFixed(2)}] ${s.text}`);
    }
  });
  ws.on("error", (err) => fail(`connection error: ${err.message}`));
}

function parseWav(buffer) {
  // RIFF chunks: find "fmt " (16-bit mono required) and "data"
  let pos = 12, rate = 0, channels = 0, bits = 0;
  while (pos + 8 <= buffer.length) {
    const id = buffer.toString("ascii", pos, pos + 4);
    const size = buffer.readUInt32LE(pos + 4);
    if (id === "fmt ") {
      channels = buffer.readUInt16LE(pos + 10);
      rate = buffer.readUInt32LE(pos + 12);
      bits = buffer.readUInt16LE(pos + 22);
    } else if (id === "data") {
      if (bits !== 16 || channels !== 1) fail("stream needs a 16-bit mono WAV");
      return { rate, pcm: buffer.subarray(pos + 8, Math.min(pos + 8 + size, buffer.length)) };
    }
    pos += 8 + size + (size & 1);
  }
  fail("not a WAV file with a data chunk");
}

function stream() {
  const { rate, pcm } = parseWav(readAudio());
  const speed = Number(option("speed", "1"));
  const query = apiKey ? `?api_key=${encodeURIComponent(apiKey)}` : "";
  const ws = new WebSocket(endpoint("/api/core/google/asr") + query, wsOptions);
  ws.on("unexpected-response", refused);
  ws.on("message", async (data) => {
    const message = JSON.parse(data.toString());
    if (message.type === "connection") {
      const step = Math.floor(rate / 10) * 2;
      for (let i = 0; i < pcm.length; i += step) {
        const chunk = { audio: pcm.subarray(i, i + step).toString("base64") };
        if (i === 0) {
          Object.assign(chunk, { rate, language_code: option("language-code", "en-US") });
          if (interim) chunk.interim_results = true;
        }
        ws.send(JSON.stringify(chunk));
        if (speed > 0) await new Promise((r) => setTimeout(r, 100 / speed));
      }
      ws.send(JSON.stringify({ type: "end" }));
    } else if ("asr_interim" in message) {
      console.error(`... ${message.asr_interim}`);
    } else if ("asr_reply" in message) {
      console.log(message.asr_reply);
    } else if (message.type === "error") {
      console.error(`error: ${message.message}`);
    }
  });
  ws.on("close", (code) => process.exit(code === 1000 ? 0 : 1));
  ws.on("error", (err) => fail(`connection error: ${err.message}`));
}

if (mode === "batch" && file) batch();
else if (mode === "stream" && file) stream();
else fail("usage: node client.mjs batch|stream FILE.wav [options]");
