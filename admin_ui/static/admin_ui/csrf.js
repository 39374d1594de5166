/* The dashboard saves a user's layout with jQuery.post; the view that takes it is
   not CSRF-exempt here (kcproject/urls.py), so every same-origin jQuery request
   carries Django's token from the csrftoken cookie. */
(function ($) {
  "use strict";
  if (!$) {
    return;
  }
  function cookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }
  $.ajaxSetup({
    beforeSend: function (xhr, settings) {
      if (!/^(GET|HEAD|OPTIONS|TRACE)$/i.test(settings.type) && !this.crossDomain) {
        xhr.setRequestHeader("X-CSRFToken", cookie("csrftoken"));
      }
    },
  });
})(window.jQuery || (window.django && window.django.jQuery));
