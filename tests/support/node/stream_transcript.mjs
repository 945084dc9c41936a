// The official OpenAI Node SDK streams a transcription: node stream_transcript.mjs BASE_URL AUDIO_FILE
// prints one JSON line per event it parsed.
import fs from "node:fs";
import OpenAI from "openai";

const [baseURL, audio] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
const stream = await client.audio.transcriptions.create({
  file: fs.createReadStream(audio), model: "whisper-1", stream: true,
});
for await (const event of stream) {
  console.log(JSON.stringify(event));
}
