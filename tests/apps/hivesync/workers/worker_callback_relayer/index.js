// Sample worker (tests): relays queued results to the backend with a signed callback.
import { signedCallback } from "./callback.js";

export default {
  async fetch(request, env) {
    return signedCallback(env, await request.json());
  },
};
