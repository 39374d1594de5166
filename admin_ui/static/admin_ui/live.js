/* The dashboard refreshes itself: every few seconds it fetches the modules as
   HTML (admin_ui/views/dashboard_live.py) and swaps each module's content and
   title in place. No page reload, so the scroll position stays; a module holding
   the focus (someone typing a reason) is left alone until they are done; a
   module whose content is unchanged is not touched. The collapse toggles that
   admin_tools adds to titles are kept. */
(function () {
  "use strict";
  var live = document.getElementById("ops-live");
  if (!live || !window.fetch || !window.DOMParser) {
    return;
  }
  var url = live.getAttribute("data-url");
  var interval = parseInt(live.getAttribute("data-interval"), 10) || 5000;
  var busy = false;

  function status(text, failing) {
    var line = document.querySelector("#ops-live .ops-live-status");
    if (line) {
      line.textContent = text;
      line.classList.toggle("ops-alarm", !!failing);
    }
  }

  function swapTitle(oldModule, newModule) {
    var oldTitle = oldModule.querySelector(":scope > h2");
    var newTitle = newModule.querySelector(":scope > h2");
    if (!oldTitle || !newTitle || !newTitle.firstChild || !oldTitle.firstChild) {
      return;
    }
    var fresh = newTitle.firstChild.cloneNode(true);
    if (oldTitle.firstChild.isEqualNode(fresh)) {
      return;
    }
    oldTitle.replaceChild(fresh, oldTitle.firstChild);
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var modules = doc.querySelectorAll(".dashboard-module[id]");
    var focused = document.activeElement;
    for (var i = 0; i < modules.length; i++) {
      var fresh = modules[i];
      var current = document.getElementById(fresh.id);
      if (!current || (focused && focused !== document.body && current.contains(focused))) {
        continue;
      }
      var oldContent = current.querySelector(":scope > .dashboard-module-content");
      var newContent = fresh.querySelector(":scope > .dashboard-module-content");
      if (oldContent && newContent && oldContent.innerHTML !== newContent.innerHTML) {
        oldContent.innerHTML = newContent.innerHTML;
      }
      swapTitle(current, fresh);
    }
  }

  function refresh() {
    if (busy || document.visibilityState === "hidden") {
      return;
    }
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (!response.ok || response.redirected) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        swap(html);
        document.documentElement.setAttribute("data-ops-refreshed", String(Date.now()));
      })
      .catch(function () {
        status("Not refreshed since " + new Date().toLocaleTimeString() +
          ": the console cannot be reached. Retrying…", true);
      })
      .then(function () {
        busy = false;
      });
  }

  window.setInterval(refresh, interval);
})();
