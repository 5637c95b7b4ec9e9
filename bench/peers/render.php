<?php
// The PHP-FPM peer of the render scenario (bench/scenarios/render.ts): render.lua's page in PHP,
// byte for byte the same body. strtr with an array replaces in one pass from a table, as Lua's
// gsub with a table does (str_replace with arrays would rescan its own output).
$escapes = ['&' => '&amp;', '<' => '&lt;', '>' => '&gt;', '"' => '&quot;', "'" => '&#39;'];
$rows = [];
for ($i = 1; $i <= 200; $i++) {
    $name = strtr("item $i & co", $escapes);
    $rows[] = sprintf('<tr><td>%d</td><td>%s</td><td>%.2f</td></tr>', $i, $name, $i * 1.25);
}
echo '<table>', implode("\n", $rows), "</table>\n";
