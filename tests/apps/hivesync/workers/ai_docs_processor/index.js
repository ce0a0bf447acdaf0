// Sample worker (tests): AI docs into R2 under ai-docs/, then a signed callback.
import { signedCallback } from "./callback.js";

export default {
  async fetch(request, env) {
    const job = await request.json();
    await env.R2.put(`ai-docs/${job.id}.md`, `model: ${env.AI_MODEL}`);
    return signedCallback(env, { kind: "ai_docs", id: job.id, status: "done" });
  },
};
