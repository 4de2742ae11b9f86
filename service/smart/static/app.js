// The documentation form: shows the fields' conditions, checks every value before sending (the
// server checks them again, service/smart/form.py), sends JSON with the CSRF token, and shows
// each problem next to its field. No framework, no build step.
(function () {
  "use strict";
  var form = document.getElementById("documentation");
  if (!form) return;
  var data = JSON.parse(document.getElementById("form-data").textContent);
  var missing = data.missing;
  var MAX_MINUTES = 1440;
  var DECIMAL = /^\s*\d+(?:[.,]\d+)?\s*$/;
  var ICD10CM = /^[A-TV-Z][0-9][0-9AB](?:\.[0-9A-TV-Z]{1,4})?$/;
  var UNIT_LABELS = {"Gy.cm2": "Gy·cm²", "mGy.cm2": "mGy·cm²", "mGy": "mGy"};

  function $(id) { return document.getElementById(id); }
  function has(element) { return missing.indexOf(element) >= 0; }
  function number(text) { return DECIMAL.test(text) ? Number(text.trim().replace(",", ".")) : NaN; }

  // dose units follow the quantity
  var quantity = $("dose-quantity"), unit = $("dose-unit");
  function fillUnits() {
    if (!quantity) return;
    unit.textContent = "";
    Object.keys(data.doseUnits[quantity.value] || {}).forEach(function (u) {
      var o = document.createElement("option");
      o.value = u; o.textContent = UNIT_LABELS[u] || u; unit.appendChild(o);
    });
  }
  if (quantity) { quantity.addEventListener("change", fillUnits); fillUnits(); }

  // "another reason" and "other body site" show their inputs only when chosen
  function toggles() {
    var other = $("indication-other");
    if (other && other.dataset.needs) { other.hidden = !$(other.dataset.needs).checked; }
    var site = $("body-site"), siteOther = $("body-site-other");
    if (site && siteOther) { siteOther.hidden = site.value !== "other"; }
  }
  form.addEventListener("change", toggles);
  toggles();

  function clearErrors() {
    Array.prototype.forEach.call(form.querySelectorAll(".field-error"), function (p) { p.hidden = true; p.textContent = ""; });
    Array.prototype.forEach.call(form.querySelectorAll("[aria-invalid]"), function (el) { el.removeAttribute("aria-invalid"); });
    $("summary").hidden = true; $("summary-list").textContent = "";
  }

  function showErrors(problems, text) {
    var list = $("summary-list");
    problems.forEach(function (p) {
      var slot = $("error-" + p.field) || $("error-" + p.field.split(".")[0]);
      var message = "Expected " + p.expected + ".";
      if (slot) {
        slot.textContent = message; slot.hidden = false;
        Array.prototype.forEach.call(document.querySelectorAll('[aria-describedby~="' + slot.id + '"]'),
          function (el) { el.setAttribute("aria-invalid", "true"); });
      }
      var li = document.createElement("li");
      li.textContent = p.field + ": " + message;
      list.appendChild(li);
    });
    $("summary-text").textContent = text || "Correct the fields marked below; nothing was written.";
    $("summary").hidden = false;
    $("summary").focus();
  }

  function showMessage(title, text) {
    $("summary").querySelector("h2").textContent = title;
    $("summary-text").textContent = text;
    $("summary").hidden = false;
    $("summary").focus();
  }

  // the form's values as the server reads them, and the problems the page can see itself
  function collect() {
    var body = {}, problems = [];
    function fail(field, expected) { problems.push({field: field, expected: expected}); }
    if (has("indication")) {
      var chosen = form.querySelector('input[name="indication-choice"]:checked');
      if (chosen && chosen.value !== "other") {
        body.indication = {condition: chosen.value};
      } else if (!chosen && form.querySelector('input[name="indication-choice"]')) {
        fail("indication.condition", "one of the encounter's diagnoses the form offers, or another reason");
      } else {
        var code = $("indication-code").value.trim().toUpperCase(), text = $("indication-text").value.trim();
        body.indication = {code: code, text: text};
        if (!ICD10CM.test(code)) fail("indication.code", "an ICD-10-CM code such as M54.17");
        if (text.length < 1 || text.length > 200) fail("indication.text", "the indication: text of 1 to 200 characters");
      }
    }
    if (has("fluoroscopy-time")) {
      var raw = $("fluoroscopyMinutes").value, minutes = number(raw);
      body.fluoroscopyMinutes = isNaN(minutes) ? raw : minutes;
      if (isNaN(minutes) || !(minutes > 0 && minutes <= MAX_MINUTES))
        fail("fluoroscopyMinutes", "total fluoroscopy time in minutes: a number greater than 0 and at most " + MAX_MINUTES);
    }
    if (has("radiation-dose")) {
      var q = quantity.value, u = unit.value, rawDose = $("dose-value").value, value = number(rawDose);
      body.dose = {quantity: q, value: isNaN(value) ? rawDose : value, unit: u};
      var offered = data.doseUnits[q] || {};
      if (!offered[u]) {
        fail("dose.unit", "one of Gy.cm2 or mGy.cm2 (dose-area product) or mGy (air kerma) matching the quantity");
      } else if (isNaN(value) || !(value > 0 && value <= offered[u][2])) {
        fail("dose.value", "the dose in " + u + ": a number greater than 0 and at most " + offered[u][2]);
      }
    }
    if (has("body-site")) {
      var site = $("body-site").value;
      if (site === "other") {
        var words = $("body-site-text").value.trim();
        body.bodySite = {text: words};
        if (words.length < 2 || words.length > 200) fail("bodySite.text", "the body site: text of 2 to 200 characters");
      } else {
        body.bodySite = {code: site};
        if (data.bodySites.indexOf(site) < 0) fail("bodySite.code", "one of the SNOMED CT body sites the form offers");
      }
    }
    if (has("findings") || has("signed-interpretation")) {
      body.findings = $("findings").value.trim();
      if (body.findings.length < 1 || body.findings.length > 4000) fail("findings", "the findings: text of 1 to 4000 characters");
    }
    if (has("images-retained")) {
      var countText = $("images-count").value.trim();
      body.imagesRetained = {retained: $("images-retained").checked};
      if (!body.imagesRetained.retained) fail("imagesRetained.retained", "true (the box ticked): the images of the fluoroscopy are retained");
      if (countText) {
        var count = /^\d+$/.test(countText) ? Number(countText) : NaN;
        body.imagesRetained.count = isNaN(count) ? countText : count;
        if (isNaN(count) || count < 1 || count > 100000) fail("imagesRetained.count", "a whole number of images from 1 to 100000, or absent");
      }
    }
    if (has("signed-interpretation")) {
      body.sign = $("sign").checked;
      body.interpreter = $("interpreter") ? $("interpreter").value : null;
      if (!body.sign) fail("sign", "true (the box ticked): the interpreting physician signs the interpretation");
      if (!body.interpreter) fail("interpreter", "one of the Procedure's performers the form offers");
    }
    return {body: body, problems: problems};
  }

  function done(answer) {
    var written = answer.written || [];
    var how = answer.mode === "transaction" ? "in one transaction" :
      answer.mode === "separate" ? "one at a time (this FHIR server does not take transactions)" : "";
    $("result-text").textContent = written.length + " resource" + (written.length === 1 ? "" : "s") +
      " written to the EHR " + how + ". " + (answer.review ? answer.review : answer.missing.length ? "The review still finds missing: " +
      answer.labels.join("; ") + "." : "The discharge review now finds nothing missing.");
    var list = $("result-list");
    list.textContent = "";
    written.forEach(function (w) { var li = document.createElement("li"); li.textContent = w; list.appendChild(li); });
    // the panels say what the review reads now
    var missingPanel = $("missing-list"), documentedPanel = $("documented");
    var fresh = document.createElement(answer.missing.length ? "ul" : "p");
    fresh.id = "missing-list";
    if (answer.missing.length) {
      answer.missing.forEach(function (m, i) {
        var li = document.createElement("li"); li.dataset.element = m; li.textContent = answer.labels[i];
        fresh.appendChild(li);
      });
    } else { fresh.className = "ok"; fresh.textContent = "Nothing is missing: the review asks for no more documentation."; }
    missingPanel.replaceWith(fresh);
    if (answer.judged) {
      var ticks = document.createElement("ul");
      ticks.id = "documented"; ticks.className = "ticks";
      answer.documented.forEach(function (d) { var li = document.createElement("li"); li.textContent = d; ticks.appendChild(li); });
      documentedPanel.replaceWith(ticks);
    }
    $("result").hidden = false;
    form.hidden = true;
    $("result").focus();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearErrors();
    var got = collect();
    if (got.problems.length) { showErrors(got.problems); return; }
    var button = $("save");
    button.disabled = true; button.textContent = "Saving…";
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, 60000);
    fetch(form.dataset.save, {method: "POST", credentials: "same-origin", signal: controller.signal,
      headers: {"Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf},
      body: JSON.stringify(got.body)})
      .then(function (resp) {
        return resp.json().catch(function () { return {}; }).then(function (answer) {
          if (resp.ok) { done(answer); return; }
          if (resp.status === 400 && answer.problems) { showErrors(answer.problems, answer.error); return; }
          showMessage(resp.status === 401 ? "Authorization expired" : "Not saved",
                      answer.error || ("The service answered HTTP " + resp.status + "; nothing was written."));
        });
      })
      .catch(function () { showMessage("Not saved", "The service could not be reached; nothing was written."); })
      .then(function () { clearTimeout(timer); button.disabled = false; button.textContent = "Save to the EHR"; });
  });
})();
