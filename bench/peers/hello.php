<?php
// The PHP-FPM peer of the benchmark (bench/scenarios/hello.ts): the same page as every other backend (200 text/plain "123").
// PHP's default type is text/html, hence the header.
header('Content-Type: text/plain');
echo '123';
