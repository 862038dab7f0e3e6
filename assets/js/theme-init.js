// Applies the remembered theme before the first paint (a classic script, so it blocks).
(function () {
  try {
    var t = localStorage.getItem("crs.theme");
    if (t === "light" || t === "dark") document.documentElement.setAttribute("data-theme", t);
  } catch (e) { /* storage may be disabled: follow the system */ }
})();
