<?php
// A page that costs about 2 ms of CPU to render (BENCH_PAGE_MS), the kind of PHP page a cache
// in front pays off for; cacheable for an hour.
$ms = isset($_SERVER['BENCH_PAGE_MS']) ? (float)$_SERVER['BENCH_PAGE_MS'] : 2.0;
$until = hrtime(true) + (int)($ms * 1e6);
$x = 0;
while (hrtime(true) < $until) {
    for ($i = 0; $i < 1000; $i++) $x = ($x * 31 + $i) % 1000003;
}
header('Content-Type: text/html; charset=utf-8');
header('Cache-Control: public, max-age=3600');
echo "<!DOCTYPE html><title>page</title><p>rendered in {$ms} ms ({$x})</p>\n";
