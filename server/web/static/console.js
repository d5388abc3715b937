/* Merit Collect console: small improvements where JavaScript runs. Every page works without it. */
(function () {
  "use strict";

  /* Forms marked data-confirm="question" ask before they are sent. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  /* Uploads marked data-progress show how much of the file has left, then a busy bar while the
     server compiles it. Without XMLHttpRequest the form is sent the ordinary way. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-progress") || event.defaultPrevented) { return; }
    if (!window.XMLHttpRequest || !window.FormData || !window.DOMParser) { return; }
    event.preventDefault();
    var box = form.querySelector(".progress");
    var bar = box && box.querySelector("progress");
    var text = box && box.querySelector(".progress-text");
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
    if (box) { box.hidden = false; }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable || !bar) { return; }
      var percent = Math.round(100 * e.loaded / e.total);
      bar.value = percent;
      text.textContent = text.getAttribute("data-sending") + " " + percent + " %";
    });
    xhr.upload.addEventListener("load", function () {
      if (!bar) { return; }
      bar.removeAttribute("value");  /* indeterminate: the server is compiling */
      box.classList.add("busy");
      text.textContent = text.getAttribute("data-compiling");
    });
    xhr.addEventListener("load", function () {
      var landed = xhr.responseURL ? new URL(xhr.responseURL) : null;
      if (landed && landed.pathname !== new URL(form.action, location.href).pathname) {
        location.assign(xhr.responseURL);  /* success: the form's page */
        return;
      }
      /* The same page again, with the problems found: show it in place. */
      var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
      document.title = page.title;
      document.body.replaceWith(document.adoptNode(page.body));
      prepare(document);
      var problem = document.querySelector("[role=alert]");
      if (problem) { problem.scrollIntoView({ block: "center" }); }
    });
    xhr.addEventListener("error", function () {
      form.removeAttribute("data-progress");
      if (button) { button.disabled = false; }
      HTMLFormElement.prototype.submit.call(form);
    });
    xhr.send(new FormData(form));
  });

  /* "Select all" boxes of bulk actions appear only where they can work. */
  function prepare(root) {
    root.querySelectorAll("input[data-select-all]").forEach(function (all) {
      all.hidden = false;
      all.addEventListener("change", function () {
        var name = all.getAttribute("data-select-all");
        all.form.querySelectorAll("input[type=checkbox][name='" + name + "']").forEach(function (box) {
          box.checked = all.checked;
        });
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { prepare(document); });
  } else {
    prepare(document);
  }
})();
