// Search as you type on the connect page. Without this script the page works the same through its
// GET search form; with it, results are fetched from /connect/results while typing and the count is
// announced in the page's live region (#result-status). Arrow Down moves from the search box to the results.
(function () {
  "use strict";
  var form = document.getElementById("search-form");
  var input = document.getElementById("q");
  var results = document.getElementById("results");
  var status = document.getElementById("result-status");
  var proceed = document.getElementById("continue");
  if (!form || !input || !results || !status || !window.fetch || !window.DOMParser) {
    return;
  }
  var timer = null;
  var latest = 0;

  function query() {
    return new URLSearchParams(new FormData(form)).toString();
  }

  function refresh() {
    var ticket = ++latest;
    var params = query();
    fetch("/connect/results?" + params, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("search failed: " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (ticket !== latest) {
          return; // an answer to an older keystroke
        }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var body = doc.getElementById("results-body");
        if (!body) {
          return;
        }
        results.replaceChildren(document.importNode(body, true));
        status.textContent = body.getAttribute("data-status") || "";
        if (proceed) {
          proceed.hidden = !results.querySelector("input[type=radio]");
        }
        window.history.replaceState(null, "", "/connect?" + params);
      })
      .catch(function () {
        // Keep what is shown; the Search button still submits the form to the server.
      });
  }

  input.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 200);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "ArrowDown") {
      var first = results.querySelector("input[type=radio]:checked") || results.querySelector("input[type=radio]");
      if (first) {
        event.preventDefault();
        first.focus();
      }
    }
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    window.clearTimeout(timer);
    refresh();
  });
})();
