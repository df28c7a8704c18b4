// Liveness demo: camera -> JPEG frames over /v1/challenge/ws -> instructions and a verdict.
"use strict";

(function () {
  const FPS = 9;                       // the server drops frames faster than ~15 fps
  const MAX_WIDTH = 640;
  const JPEG_QUALITY = 0.8;
  const MAX_BUFFERED = 512 * 1024;     // skip a frame while the socket is this far behind

  const $ = (id) => document.getElementById(id);
  const form = $("start-form"), startBtn = $("start"), stopBtn = $("stop");
  const video = $("camera"), canvas = $("frame");
  const instruction = $("instruction"), stepLabel = $("step-label"), progress = $("progress");
  const feedback = $("feedback"), result = $("result"), verdict = $("verdict");
  const resultDetail = $("result-detail"), errorBox = $("error");

  let ws = null, stream = null, timer = null, encoding = false, finished = false, drawn = false;

  // An app server that created a session sends the user to /demo#token=<auth_token>. The fragment
  // never reaches a server or a Referer; it is taken out of the address bar at once.
  const sessionToken = new URLSearchParams(location.hash.slice(1)).get("token");
  if (sessionToken) {
    history.replaceState(null, "", location.pathname + location.search);
    $("key-field").hidden = true;
    $("advanced").hidden = true;
    $("api-key").required = false;
    $("session-note").hidden = false;
    instruction.textContent = "Press Start.";
  }

  function setStep(current, total) {
    if (typeof total !== "number" || total < 1) return;
    const done = Math.min(Math.max((current || 1) - 1, 0), total);
    progress.max = total;
    progress.value = done;
    stepLabel.textContent = `Step ${Math.min(current || 1, total)} of ${total}`;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function reset() {
    video.hidden = false;
    canvas.hidden = true;
    drawn = false;
    result.hidden = true;
    errorBox.hidden = true;
    verdict.textContent = "";
    verdict.dataset.verdict = "";
    resultDetail.textContent = "";
    feedback.textContent = "";
    finished = false;
  }

  function stopCapture() {
    if (timer !== null) { clearInterval(timer); timer = null; }
    if (stream && drawn) { video.hidden = true; canvas.hidden = false; }  // keep the last frame on screen
    if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
    video.srcObject = null;
  }

  function stop() {
    stopCapture();
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "cancel" }));
      ws.close(1000);
    }
    ws = null;
    startBtn.disabled = false;
    stopBtn.disabled = true;
  }

  function sendFrame() {
    if (!ws || ws.readyState !== WebSocket.OPEN || encoding || finished) return;
    if (ws.bufferedAmount > MAX_BUFFERED || !video.videoWidth) return;
    const scale = Math.min(1, MAX_WIDTH / video.videoWidth);
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    drawn = true;
    encoding = true;
    canvas.toBlob((blob) => {
      encoding = false;
      if (blob && ws && ws.readyState === WebSocket.OPEN && !finished) ws.send(blob);
    }, "image/jpeg", JPEG_QUALITY);
  }

  function onEvent(ev) {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    switch (msg.type) {
      case "challenge":
        instruction.textContent = msg.instruction || "";
        setStep(msg.current_step, msg.total_steps);
        timer = setInterval(sendFrame, Math.round(1000 / FPS));
        break;
      case "feedback":
        if (msg.reason === "frame_too_fast") break;  // a dropped frame, nothing new to show
        if (msg.instruction) instruction.textContent = msg.instruction;
        setStep(msg.current_step, msg.total_steps);
        feedback.textContent = msg.face_detected === false ? "No face found – look at the camera."
          : msg.step_completed ? "Step done." : "";
        break;
      case "result":
        finished = true;
        stopCapture();
        progress.value = progress.max;
        if (msg.verdict === undefined) {  // a session that keeps its result for the app server
          verdict.textContent = "completed";
          verdict.dataset.verdict = "completed";
          resultDetail.textContent = "Done. Your app receives the result.";
        } else {
          verdict.textContent = String(msg.verdict);
          verdict.dataset.verdict = String(msg.verdict).toLowerCase();
          resultDetail.textContent = `Steps completed: ${msg.steps_completed ?? "–"} · time: ${msg.verification_time ?? "–"}`;
        }
        result.hidden = false;
        instruction.textContent = "Finished.";
        break;
      case "error":
        finished = true;
        stopCapture();
        showError(`${msg.message} (${msg.code})`);
        break;
    }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    reset();
    let start;
    if (sessionToken) {
      start = { type: "start", auth_token: sessionToken };
    } else {
      const apiKey = $("api-key").value.trim();
      if (!apiKey) { showError("Enter an API key."); return; }
      start = { type: "start", api_key: apiKey };
      const names = $("challenges").value.split(",").map((s) => s.trim()).filter(Boolean);
      if (names.length) start.challenges = names;
      const adminKey = $("admin-key").value.trim();
      if (adminKey) start.admin_key = adminKey;
    }

    startBtn.disabled = true;
    stopBtn.disabled = false;
    instruction.textContent = "Starting the camera…";
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" }, audio: false,
      });
    } catch (err) {
      showError(`Camera unavailable: ${err.message || err.name}`);
      stop();
      return;
    }
    video.srcObject = stream;
    await video.play().catch(() => {});

    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${scheme}//${location.host}/v1/challenge/ws`);
    ws.addEventListener("open", () => ws.send(JSON.stringify(start)));
    ws.addEventListener("message", onEvent);
    ws.addEventListener("close", (ev) => {
      stopCapture();
      if (!finished) showError(`Connection closed (${ev.code}${ev.reason ? ": " + ev.reason : ""}).`);
      ws = null;
      startBtn.disabled = false;
      stopBtn.disabled = true;
    });
    instruction.textContent = "Connecting…";
  });

  stopBtn.addEventListener("click", stop);
})();
