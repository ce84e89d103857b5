#!/usr/bin/env node
// OpenAI's official Node.js SDK (`openai` on npm; it needs Node.js 20 or later) pointed at
// speechgw: nothing but baseURL changes from a program written for OpenAI.
//
//   node openai.mjs recording.mp3 [--format json|text|srt|vtt|verbose_json] [--stream]
//       [--translate] [--language de] [--model whisper-1]
//   options: --url http://localhost:8765   --api-key KEY (or SPEECHGW_API_KEY)
//
// Any audio file the server decodes (mp3, m4a, flac, ogg, webm, wav...). The text goes to
// stdout; with --stream it is printed as the server recognises it (transcript.text.delta
// events). A refused request prints the server's status and reason and exits 1.
import { createReadStream, existsSync } from "node:fs";
import OpenAI from "openai";

const [file, ...rest] = process.argv.slice(2);
const option = (name, fallback) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : fallback;
};
if (!file || !existsSync(file)) {
  console.error(file ? `${file}: no such file` : "usage: node openai.mjs FILE [options]");
  process.exit(1);
}
const client = new OpenAI({
  baseURL: `${option("url", "http://localhost:8765").replace(/\/+$/, "")}/v1`,
  // the SDK insists on a key; a server without keys ignores it
  apiKey: option("api-key", process.env.SPEECHGW_API_KEY) || "no-key",
  maxRetries: 0,
});
const request = {
  model: option("model", "whisper-1"),
  file: createReadStream(file),
  response_format: option("format", "json"),
};
const language = option("language");
if (language) request.language = language;

try {
  if (rest.includes("--translate")) {
    const answer = await client.audio.translations.create(request);
    console.log(typeof answer === "string" ? answer.trimEnd() : answer.text);
  } else if (rest.includes("--stream")) {
    const events = await client.audio.transcriptions.create({ ...request, stream: true });
    for await (const event of events) {
      if (event.type === "transcript.text.delta") process.stdout.write(event.delta);
      else if (event.type === "transcript.text.done") process.stdout.write("\n");
    }
  } else {
    const answer = await client.audio.transcriptions.create(request);
    console.log(typeof answer === "string" ? answer.trimEnd() : answer.text);
  }
} catch (err) {
  if (err instanceof OpenAI.APIError && err.status) {
    console.error(`refused: HTTP ${err.status}: ${err.code}: ${err.error?.message ?? err.message}`);
  } else {
    console.error(`cannot reach the server: ${err.cause?.code ?? err.message}`);
  }
  process.exit(1);
}
