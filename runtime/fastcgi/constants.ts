/**
 * FastCGI 1.0 protocol constants, named as in the specification (section 8) so they can be
 * checked against it line by line.
 */

export const FCGI_VERSION_1 = 1;
export const FCGI_HEADER_LEN = 8;
/** Largest contentLength a record header can carry (16 bits). */
export const FCGI_MAX_CONTENT = 65535;
/**
 * Largest content we put in one record when encoding: the biggest multiple of 8 that fits, so
 * full records need no padding and every record stays 8-byte aligned as the spec recommends.
 */
export const MAX_RECORD_CONTENT = 65528;

export const FCGI_NULL_REQUEST_ID = 0;

// Record types.
export const FCGI_BEGIN_REQUEST = 1;
export const FCGI_ABORT_REQUEST = 2;
export const FCGI_END_REQUEST = 3;
export const FCGI_PARAMS = 4;
export const FCGI_STDIN = 5;
export const FCGI_STDOUT = 6;
export const FCGI_STDERR = 7;
export const FCGI_DATA = 8;
export const FCGI_GET_VALUES = 9;
export const FCGI_GET_VALUES_RESULT = 10;
export const FCGI_UNKNOWN_TYPE = 11;

// BEGIN_REQUEST flags.
export const FCGI_KEEP_CONN = 1;

// Roles.
export const FCGI_RESPONDER = 1;
export const FCGI_AUTHORIZER = 2;
export const FCGI_FILTER = 3;

// END_REQUEST protocolStatus values.
export const FCGI_REQUEST_COMPLETE = 0;
export const FCGI_CANT_MPX_CONN = 1;
export const FCGI_OVERLOADED = 2;
export const FCGI_UNKNOWN_ROLE = 3;

// GET_VALUES variable names.
export const FCGI_MAX_CONNS = 'FCGI_MAX_CONNS';
export const FCGI_MAX_REQS = 'FCGI_MAX_REQS';
export const FCGI_MPXS_CONNS = 'FCGI_MPXS_CONNS';

/** Role number to name, for logs and the request object. */
export const roleNames: Readonly<Record<number, 'RESPONDER' | 'AUTHORIZER' | 'FILTER'>> = {
  [FCGI_RESPONDER]: 'RESPONDER',
  [FCGI_AUTHORIZER]: 'AUTHORIZER',
  [FCGI_FILTER]: 'FILTER',
};
