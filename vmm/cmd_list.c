// SPDX-License-Identifier: MIT
/*
 * imgvm list: the defined VMs, one a line: name, state, memory, vCPUs.
 */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/cmd.h"
#include "vmm/vmdef.h"

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *option_text(json_object *options, const char *key,
			       const char *fallback)
{
	json_object *v;

	if (json_object_object_get_ex(options, key, &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return fallback;
}

int imgvm_cmd_list(int argc, char **argv)
{
	char home[PATH_MAX], err[512] = "";
	char **names = NULL;
	size_t count = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "imgvm: usage: imgvm list\n");
		return EXIT_USAGE;
	}
	if (vmdef_home(home, sizeof(home), err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	d = opendir(home);
	if (!d)
		return 0; /* no VM defined yet */
	while ((de = readdir(d))) {
		if (vmdef_check_name(de->d_name, err, sizeof(err)))
			continue;
		if (count == cap) {
			char **grown =
				realloc(names, (cap = cap ? 2 * cap : 16) *
						       sizeof(*names));

			if (!grown)
				break;
			names = grown;
		}
		names[count] = strdup(de->d_name);
		if (names[count])
			count++;
	}
	closedir(d);
	qsort(names, count, sizeof(*names), compare_names);
	for (size_t i = 0; i < count; i++) {
		char dir[PATH_MAX];
		json_object *options;

		if (!vmdef_load(names[i], &options, err, sizeof(err))) {
			vmdef_dir(names[i], dir, sizeof(dir), err, sizeof(err));
			printf("%-20s %-8s memory %-6s cpus %s\n", names[i],
			       vmdef_running(dir) ? "running" : "stopped",
			       option_text(options, "memory", "512M"),
			       option_text(options, "cpus", "1"));
			json_object_put(options);
		}
		free(names[i]);
	}
	free(names);
	return 0;
}
