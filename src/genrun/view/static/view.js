// genrun-view's only script: sorting and filtering the runs table, and a run's live counts.
// It never writes text it received as HTML except the rows table, which the server renders
// and escapes; everything else goes in through textContent.
"use strict";

function sortable(table) {
  const heads = table.tHead.rows[0].cells;
  Array.from(heads).forEach((th, column) => th.addEventListener("click", () => {
    const body = table.tBodies[0];
    const numeric = th.dataset.type === "number";
    const descending = !th.classList.contains("sorted-desc");
    Array.from(heads).forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
    th.classList.add(descending ? "sorted-desc" : "sorted-asc");
    const value = row => {
      const cell = row.cells[column];
      const text = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
      if (!numeric) return text.toLowerCase();
      const number = parseFloat(text);
      return Number.isNaN(number) ? -Infinity : number;
    };
    const rows = Array.from(body.rows).filter(r => r.classList.contains("run"));
    rows.sort((a, b) => (value(a) < value(b) ? -1 : value(a) > value(b) ? 1 : 0) * (descending ? -1 : 1));
    rows.forEach(r => body.appendChild(r));
  }));
}

function filterable(input, table) {
  input.addEventListener("input", () => {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    Array.from(table.tBodies[0].rows).forEach(row => {
      const text = row.textContent.toLowerCase();
      row.hidden = !words.every(w => text.includes(w));
    });
  });
}

function live(section) {
  const rowsDiv = document.getElementById("rows");
  let bytes = section.dataset.bytes;
  let busy = false;
  const poll = async () => {
    if (busy) return;
    busy = true;
    try {
      const reply = await fetch(section.dataset.liveUrl, {cache: "no-store"});
      if (!reply.ok) return;
      const counts = await reply.json();
      document.getElementById("live-rows").textContent = String(counts.rows);
      document.getElementById("live-failed").textContent = String(counts.failed);
      const status = document.getElementById("live-status");
      status.textContent = String(counts.status);
      status.className = "status " + String(counts.status);
      if (String(counts.bytes) !== String(bytes)) {
        bytes = counts.bytes;
        const table = await fetch(section.dataset.rowsUrl, {cache: "no-store"});
        if (table.ok) rowsDiv.innerHTML = await table.text();  // rendered and escaped by the server
      }
    } catch (error) {
      // the server stopped: the page stays as it is
    } finally {
      busy = false;
    }
  };
  setInterval(poll, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(sortable);
  const input = document.getElementById("runs-filter");
  if (input) filterable(input, document.getElementById("runs"));
  const section = document.getElementById("live");
  if (section) live(section);
});
