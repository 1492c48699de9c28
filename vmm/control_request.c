// SPDX-License-Identifier: MIT
/*
 * The control protocol's request parser (see control.h): one JSON line in,
 * a command and its argument out, or a one-line reason.  Kept apart from
 * the server so that it can be fuzzed alone.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "vmm/control.h"
#include "vmm/json_text.h"

const char *const control_command_names[] = {
	[CONTROL_STATUS] = "status",
	[CONTROL_EJECT] = "eject",
	[CONTROL_INSERT] = "insert",
	[CONTROL_POWERBUTTON] = "powerbutton",
	[CONTROL_RESET] = "reset",
	[CONTROL_PAUSE] = "pause",
	[CONTROL_RESUME] = "resume",
	[CONTROL_STOP] = "stop",
	[CONTROL_SCREENSHOT] = "screenshot",
	[CONTROL_SENDKEYS] = "sendkeys",
};
#define CONTROL_NCOMMANDS \
	(sizeof(control_command_names) / sizeof(control_command_names[0]))

/* ---- requests ----------------------------------------------------------*/

/* The argument each command takes ("path", "text") or NULL. */
static const char *command_argument(enum control_command c)
{
	switch (c) {
	case CONTROL_INSERT:
	case CONTROL_SCREENSHOT:
		return "path";
	case CONTROL_SENDKEYS:
		return "text";
	default:
		return NULL;
	}
}

int control_parse_request(const char *line, size_t len,
			  struct control_request *req, char *err, size_t errlen)
{
	json_object *root, *command;
	const char *name, *argname;
	size_t i;
	int ret = -EINVAL;

	memset(req, 0, sizeof(*req));
	if (len > CONTROL_LINE_MAX) {
		snprintf(err, errlen, "request longer than %d bytes",
			 CONTROL_LINE_MAX);
		return -E2BIG;
	}
	if (memchr(line, 0, len)) {
		snprintf(err, errlen, "request holds a NUL byte");
		return -EINVAL;
	}
	ret = json_text_parse(line, len, 16, &root, err, errlen);
	if (ret)
		return ret;
	ret = -EINVAL;
	if (!json_object_is_type(root, json_type_object) ||
	    !json_object_object_get_ex(root, "command", &command) ||
	    !json_object_is_type(command, json_type_string)) {
		snprintf(err, errlen,
			 "a request is an object with a \"command\" string");
		goto out;
	}
	name = json_object_get_string(command);
	for (i = 0; i < CONTROL_NCOMMANDS; i++)
		if (!strcmp(name, control_command_names[i]))
			break;
	if (i == CONTROL_NCOMMANDS) {
		snprintf(err, errlen, "unknown command '%.64s'", name);
		goto out;
	}
	req->command = (enum control_command)i;
	argname = command_argument(req->command);
	json_object_object_foreach(root, key, value)
	{
		(void)value;
		if (strcmp(key, "command") &&
		    (!argname || strcmp(key, argname))) {
			snprintf(err, errlen, "%s: unknown field '%.64s'",
				 control_command_names[i], key);
			goto out;
		}
	}
	if (argname) {
		json_object *arg;

		if (!json_object_object_get_ex(root, argname, &arg) ||
		    !json_object_is_type(arg, json_type_string) ||
		    (req->command != CONTROL_SENDKEYS &&
		     !json_object_get_string_len(arg))) {
			snprintf(err, errlen, "%s needs a \"%s\" string",
				 control_command_names[i], argname);
			goto out;
		}
		/* a NUL inside would cut the string short unseen */
		if (strlen(json_object_get_string(arg)) !=
		    (size_t)json_object_get_string_len(arg)) {
			snprintf(err, errlen, "%s: \"%s\" holds a NUL",
				 control_command_names[i], argname);
			goto out;
		}
		req->argument = strdup(json_object_get_string(arg));
		if (!req->argument) {
			snprintf(err, errlen, "out of memory");
			ret = -ENOMEM;
			goto out;
		}
	}
	ret = 0;
out:
	json_object_put(root);
	return ret;
}

void control_request_free(struct control_request *req)
{
	free(req->argument);
	req->argument = NULL;
}
