// DSS page behaviour that the Content-Security-Policy allows (no inline handlers, no eval).
// A control marked data-submit-on-change submits its form when its value changes: choosing
// a good-run list file applies it at once.
document.addEventListener("change", function (event) {
  var control = event.target;
  if (control.matches && control.matches("[data-submit-on-change]") && control.form) {
    control.form.requestSubmit();
  }
});
