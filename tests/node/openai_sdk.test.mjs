// The official openai npm SDK against brt-server's HTTP API (run by tests/integration/test_node_clients.py).
// Environment: BRT_BASE_URL (http://127.0.0.1:PORT/v1), BRT_EXPECT (a JSON file the Python side wrote
// from gRPC: {"text": ..., "token_logprobs": [...], "greedy_prompt": ..., "greedy_text": ...}).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.BRT_BASE_URL, apiKey: "unused", maxRetries: 0 });
const expect = JSON.parse(readFileSync(process.env.BRT_EXPECT, "utf8"));

async function modelId() {
  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  return models.data[0].id;
}

test("completions: greedy text equals gRPC Generate", async () => {
  const r = await client.completions.create({
    model: await modelId(), prompt: expect.greedy_prompt, max_tokens: 24, temperature: 0 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices[0].text, expect.greedy_text);
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 24);
});

test("completions: streaming yields the same text, then usage", async () => {
  const stream = await client.completions.create({
    model: await modelId(), prompt: expect.greedy_prompt, max_tokens: 24, temperature: 0, stream: true,
    stream_options: { include_usage: true } });
  let text = "";
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) {
      text += chunk.choices[0].text;
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, expect.greedy_text);
  assert.equal(finish, "length");
  assert.equal(usage.completion_tokens, 24);
});

test("completions: echo gives prompt logprobs equal to gRPC Score", async () => {
  const r = await client.completions.create({
    model: await modelId(), prompt: expect.text, echo: true, max_tokens: 0, logprobs: 1 });
  const lp = r.choices[0].logprobs;
  assert.equal(r.choices[0].text, expect.text);
  assert.deepEqual(lp.token_logprobs, expect.token_logprobs);
  assert.equal(lp.tokens.length, lp.top_logprobs.length);
  assert.equal(r.usage.prompt_tokens, expect.token_logprobs.length);
});

test("errors arrive as the SDK's typed errors with the server's message", async () => {
  await assert.rejects(
    client.completions.create({ model: await modelId(), prompt: "x", temperature: 99 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message));
  await assert.rejects(
    client.completions.create({ model: "no-such-model", prompt: "x" }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
});
