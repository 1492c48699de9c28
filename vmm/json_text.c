// SPDX-License-Identifier: MIT
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "vmm/json_text.h"

int json_text_parse(const char *text, size_t len, int depth,
		    json_object **value, char *err, size_t errlen)
{
	enum json_tokener_error jerr;
	json_tokener *tok;
	json_object *root;
	int ret = -EINVAL;

	*value = NULL;
	if (len > INT_MAX) {
		snprintf(err, errlen, "not JSON: longer than %d bytes",
			 INT_MAX);
		return -EINVAL;
	}
	tok = json_tokener_new_ex(depth);
	if (!tok) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	root = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	if (!root || jerr != json_tokener_success) {
		snprintf(err, errlen, "not JSON: %s",
			 jerr == json_tokener_continue
				 ? "truncated"
				 : json_tokener_error_desc(jerr));
		goto out;
	}
	for (size_t i = tok->char_offset; i < len; i++) {
		if (!strchr(" \t\r\n", text[i])) {
			snprintf(err, errlen, "text after the JSON value");
			goto out;
		}
	}
	*value = root;
	root = NULL;
	ret = 0;
out:
	json_object_put(root);
	json_tokener_free(tok);
	return ret;
}
