// Helpers every JSON endpoint shares, required by items.js as require('api'). A module's top
// level runs afresh in each request that requires it: nothing kept here outlives the request.

// Sends `value` as JSON; returns the status for the script to return.
exports.reply = (value, status = 200) => {
  response.headers['Content-Type'] = 'application/json';
  response.headers['Cache-Control'] = 'no-store';
  write(JSON.stringify(value));
  return status;
};

exports.fail = (status, message) => exports.reply({ error: message }, status);

// The request's body as a JSON object, or null and why.
exports.body = async () => {
  try {
    const value = JSON.parse(await request.body());
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return [value, null];
  } catch {
    // not JSON: said below
  }
  return [null, 'the body must be a JSON object'];
};

// True when the request's method is one of `methods`; else sets Allow for the 405.
exports.allow = (...methods) => {
  if (methods.includes(request.method)) return true;
  response.headers.Allow = methods.join(', ');
  return false;
};
