// The render page (bench/scenarios/render.ts, and micro's render case) on Lodestone's JS engine:
// the same steps as render.lua (replace with a table of escapes where Lua uses gsub), byte for
// byte the same body.
/* global print */ // Lodestone's script API: the sandbox gives it, ESLint cannot know.
const escapes = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const rows = [];
for (let i = 1; i <= 200; i++) {
  const name = `item ${i} & co`.replace(/[&<>"']/g, (c) => escapes[c]);
  rows.push(`<tr><td>${i}</td><td>${name}</td><td>${(i * 1.25).toFixed(2)}</td></tr>`);
}
print(`<table>${rows.join('\n')}</table>`);
