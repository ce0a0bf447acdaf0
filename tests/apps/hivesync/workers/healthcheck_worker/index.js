// Sample worker (tests, optional in the plan): reports the backend's health to logs/workers/.
export default {
  async scheduled(event, env) {
    const r = await fetch(env.WORKER_CALLBACK_URL.replace("/api/v1/workers/callback", "/api/health"));
    await env.R2.put(`logs/workers/health-${Date.now()}.json`, JSON.stringify({ status: r.status }));
  },
};
