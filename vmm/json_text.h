/* SPDX-License-Identifier: MIT */
/* JSON text that must be one value and nothing else: a control request
 * line, a VM definition. */
#ifndef VMM_JSON_TEXT_H
#define VMM_JSON_TEXT_H

#include <json-c/json.h>
#include <stddef.h>

/* *VALUE = the JSON value that is the whole of TEXT (LEN bytes, white
 * space may follow it), nested at most DEPTH deep.  0, or -ENOMEM /
 * -EINVAL with a message in ERR ("not JSON: ...", "text after the JSON
 * value").  The caller puts the value. */
int json_text_parse(const char *text, size_t len, int depth,
		    json_object **value, char *err, size_t errlen);

#endif
