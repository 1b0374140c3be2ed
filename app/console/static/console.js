// Shoal console: progressive enhancement of the upload form (the plain form works without it).
// Files can be dropped on the drop zone, and the upload shows its progress. Loaded as a file:
// the Content-Security-Policy allows no inline script.
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

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-upload]").forEach(enhanceUpload);
});
