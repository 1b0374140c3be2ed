// Shoal console: progressive enhancement (every form works without it). Files can be dropped
// on the upload form's drop zone, and the upload shows its progress; the Ask form streams its
// answer. Loaded as a file: the Content-Security-Policy allows no inline script. Text from the
// server goes in as text (textContent), never as HTML, except the result panel the server
// rendered and escaped itself.
"use strict";

function enhanceUpload(form) {
  const input = form.querySelector("input[type=file]");
  const zone = form.querySelector("[data-drop]");
  const bar = form.querySelector("[data-progress]");
  if (zone && input) {
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
      }
    });
  }
  form.addEventListener("submit", (event) => {
    if (!bar || !window.XMLHttpRequest) {
      return; // the browser posts the form itself
    }
    event.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    bar.hidden = false;
    bar.value = 0;
    request.upload.addEventListener("progress", (progress) => {
      if (progress.lengthComputable) {
        bar.value = Math.round((100 * progress.loaded) / progress.total);
      }
    });
    request.addEventListener("load", () => {
      const type = request.getResponseHeader("content-type") || "";
      if (request.status < 400 && request.responseURL) {
        window.location.assign(request.responseURL); // the job page the upload redirected to
      } else if (!type.startsWith("text/html")) {
        // Refused before the console saw it (a body over SHOAL_MAX_UPLOAD_MB): problem+json.
        bar.hidden = true;
        showError(form, problemDetail(request));
      } else {
        // The page with the error, as the browser would show it without this script.
        const page = new DOMParser().parseFromString(request.responseText, "text/html");
        document.title = page.title;
        document.body.replaceWith(page.body);
      }
    });
    request.addEventListener("error", () => form.submit());
    request.send(new FormData(form));
  });
}

function problemDetail(request) {
  try {
    return JSON.parse(request.responseText).detail || request.statusText;
  } catch {
    return `The upload was refused (${request.status}).`;
  }
}

function showError(form, text) {
  let message = form.querySelector(".message.error");
  if (!message) {
    message = document.createElement("p");
    message.className = "message error";
    message.setAttribute("role", "alert");
    form.prepend(message);
  }
  message.textContent = text; // text, never HTML
}

// The Ask form: POST to its data-stream URL and show the Server-Sent Events as they come
// (app/console/questions.py): the route, then the answer's tokens, then the finished panel.
function enhanceAsk(form) {
  const button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    if (!window.fetch || !window.ReadableStream || !window.TextDecoder) {
      return; // the browser posts the form itself
    }
    event.preventDefault();
    button.disabled = true;
    let tokens = 0;
    try {
      const response = await fetch(form.dataset.stream, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
      });
      const type = response.headers.get("content-type") || "";
      if (response.redirected) {
        window.location.assign(response.url); // the session is gone: sign in again
        return;
      }
      if (!type.startsWith("text/event-stream")) {
        showPanel(await response.text(), null); // refused, or passages: the panel at once
        return;
      }
      const answer = streamingPanel();
      await readEvents(response.body, (name, data) => {
        if (name === "route") {
          answer.route.textContent = `${data.name}: ${data.reason}`;
        } else if (name === "token") {
          tokens += 1;
          answer.text.textContent += data.text;
        } else if (name === "outcome" || name === "error") {
          showPanel(data.html, tokens);
        }
      });
    } catch (error) {
      showPanel(null, null, `The answer could not be read: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });
}

// Calls onEvent(name, data) for each event of a text/event-stream body.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) {
          name = line.slice(6).trim();
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        }
      }
      if (data.length) {
        onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }
}

// A panel for the answer while it streams: the route, and the text so far.
function streamingPanel() {
  const panel = document.createElement("section");
  panel.className = "card";
  panel.id = "outcome";
  panel.setAttribute("aria-live", "polite");
  panel.setAttribute("aria-busy", "true");
  const title = document.createElement("h2");
  title.textContent = "Answer";
  const route = document.createElement("p");
  route.className = "hint";
  const text = document.createElement("p");
  text.className = "answer streaming";
  panel.append(title, route, text);
  document.getElementById("outcome").replaceWith(panel);
  return { route, text };
}

// Replaces the result panel with the one the server rendered (html), or with a message.
function showPanel(html, tokens, message) {
  const current = document.getElementById("outcome");
  const panel = html
    ? new DOMParser().parseFromString(html, "text/html").getElementById("outcome")
    : null;
  if (!panel) {
    const failed = document.createElement("section");
    failed.className = "card";
    failed.id = "outcome";
    const text = document.createElement("p");
    text.className = "message error";
    text.setAttribute("role", "alert");
    text.textContent = message || "The answer could not be read.";
    failed.append(text);
    current.replaceWith(failed);
    return;
  }
  if (tokens !== null) {
    panel.dataset.streamedTokens = String(tokens); // how many token events it took
  }
  current.replaceWith(document.adoptNode(panel));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-upload]").forEach(enhanceUpload);
  document.querySelectorAll("form[data-stream]").forEach(enhanceAsk);
});
