// Sample worker (tests): builds a preview into R2 under previews/, then calls the backend back.
import { signedCallback } from "./callback.js";

export default {
  async fetch(request, env) {
    const job = await request.json();
    await env.R2.put(`previews/${job.id}/index.html`, job.html ?? "");
    return signedCallback(env, { kind: "preview", id: job.id, status: "done" });
  },
};
