// SPDX-License-Identifier: MIT
/*
 * imgvm status|eject|pause|resume|reset|stop|powerbutton NAME,
 * imgvm insert NAME ISO, imgvm screenshot NAME FILE.png,
 * imgvm sendkeys NAME TEXT: one request on a running VM's control socket.
 * NAME may also be the path of a socket (with a '/'), as given to
 * imgvm boot --control.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "vmm/cmd.h"
#include "vmm/control.h"
#include "vmm/vmdef.h"

static const char *argument_name(const char *command)
{
	if (!strcmp(command, "insert") || !strcmp(command, "screenshot"))
		return "path";
	if (!strcmp(command, "sendkeys"))
		return "text";
	return NULL;
}

/* sendkeys' text: \n, \t, \\ as in C */
static char *unescape(const char *text)
{
	char *out = malloc(strlen(text) + 1), *o = out;

	if (!out)
		return NULL;
	for (const char *p = text; *p; p++) {
		if (*p == '\\' && p[1]) {
			p++;
			*o++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
		} else {
			*o++ = *p;
		}
	}
	*o = 0;
	return out;
}

static void print_status(json_object *reply)
{
	json_object *v, *disks, *cd;

	if (json_object_object_get_ex(reply, "state", &v))
		printf("state:   %s\n", json_object_get_string(v));
	if (json_object_object_get_ex(reply, "uptime", &v))
		printf("uptime:  %s s\n", json_object_get_string(v));
	if (json_object_object_get_ex(reply, "vcpus", &v))
		printf("vcpus:   %s\n", json_object_get_string(v));
	if (json_object_object_get_ex(reply, "memory", &v))
		printf("memory:  %lld MiB\n",
		       (long long)(json_object_get_int64(v) >> 20));
	if (json_object_object_get_ex(reply, "disks", &disks))
		for (size_t i = 0; i < json_object_array_length(disks); i++) {
			json_object *d = json_object_array_get_idx(disks, i);
			json_object *p, *r, *w;

			json_object_object_get_ex(d, "path", &p);
			json_object_object_get_ex(d, "bytes_read", &r);
			json_object_object_get_ex(d, "bytes_written", &w);
			printf("disk %zu:  %s  read %s bytes, written %s bytes\n",
			       i, json_object_get_string(p),
			       json_object_get_string(r),
			       json_object_get_string(w));
		}
	if (json_object_object_get_ex(reply, "cdrom", &cd) && cd) {
		json_object *m = NULL;

		json_object_object_get_ex(cd, "medium", &m);
		printf("cdrom:   %s\n",
		       m ? json_object_get_string(m) : "(empty)");
	}
}

int imgvm_cmd_control(int argc, char **argv)
{
	const char *command = argv[0], *argname = argument_name(command);
	char socket_path[PATH_MAX + 32], err[512] = "", *reply_text = NULL;
	json_object *request, *reply, *ok, *error;
	bool as_json = false;
	int ret;

	if (argc > 2 && !strcmp(argv[argc - 1], "--json")) {
		as_json = true;
		argc--;
	}
	if (argc != (argname ? 3 : 2)) {
		fprintf(stderr, "imgvm: usage: imgvm %s NAME%s%s\n", command,
			argname ? " " : "",
			argname ? (!strcmp(argname, "text") ? "TEXT" : "FILE")
				: "");
		return EXIT_USAGE;
	}
	if (strchr(argv[1], '/')) {
		snprintf(socket_path, sizeof(socket_path), "%s", argv[1]);
	} else {
		char dir[PATH_MAX];

		if (vmdef_dir(argv[1], dir, sizeof(dir), err, sizeof(err))) {
			fprintf(stderr, "imgvm: %s\n", err);
			return EXIT_USAGE;
		}
		snprintf(socket_path, sizeof(socket_path), "%s/" VMDEF_CONTROL,
			 dir);
	}
	request = json_object_new_object();
	json_object_object_add(request, "command",
			       json_object_new_string(command));
	if (argname) {
		char *value = NULL;

		if (!strcmp(argname, "path") && argv[2][0] != '/') {
			char cwd[PATH_MAX];

			if (getcwd(cwd, sizeof(cwd)) &&
			    asprintf(&value, "%s/%s", cwd, argv[2]) < 0)
				value = NULL;
		} else if (!strcmp(argname, "text")) {
			value = unescape(argv[2]);
		} else {
			value = strdup(argv[2]);
		}
		if (!value) {
			fprintf(stderr, "imgvm: out of memory\n");
			return EXIT_USAGE;
		}
		json_object_object_add(request, argname,
				       json_object_new_string(value));
		free(value);
	}
	ret = control_call(socket_path,
			   json_object_to_json_string_ext(
				   request,
				   JSON_C_TO_STRING_PLAIN |
					   JSON_C_TO_STRING_NOSLASHESCAPE),
			   &reply_text, err, sizeof(err));
	json_object_put(request);
	if (ret) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	reply = json_tokener_parse(reply_text);
	if (!reply || !json_object_object_get_ex(reply, "ok", &ok)) {
		fprintf(stderr, "imgvm: %s: not a reply: %.200s\n", socket_path,
			reply_text);
		free(reply_text);
		json_object_put(reply);
		return EXIT_USAGE;
	}
	if (!json_object_get_boolean(ok)) {
		json_object_object_get_ex(reply, "error", &error);
		fprintf(stderr, "imgvm: %s: %s\n", command,
			error ? json_object_get_string(error) : "failed");
		ret = EXIT_USAGE;
	} else if (as_json) {
		printf("%s\n", reply_text);
	} else if (!strcmp(command, "status")) {
		print_status(reply);
	} else if (!strcmp(command, "powerbutton")) {
		json_object *seen;

		if (json_object_object_get_ex(reply, "guest_listening",
					      &seen) &&
		    !json_object_get_boolean(seen))
			fprintf(stderr,
				"imgvm: powerbutton: pressed, but the guest has "
				"not enabled the ACPI power button (yet)\n");
	}
	free(reply_text);
	json_object_put(reply);
	return ret;
}
