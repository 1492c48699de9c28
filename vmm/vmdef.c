// SPDX-License-Identifier: MIT
/*
 * VM definitions (see vmdef.h): names, folders, the vm.json parser and
 * writer, and the mapping between stored options and boot's argv.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "img.h"
#include "vmm/json_text.h"
#include "vmm/options.h"
#include "vmm/vmdef.h"

int vmdef_check_name(const char *name, char *err, size_t errlen)
{
	size_t len = strlen(name);

	if (!len || len > VMDEF_NAME_MAX || name[0] == '.' || name[0] == '-')
		goto bad;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.'))
			goto bad;
	}
	return 0;
bad:
	snprintf(err, errlen,
		 "'%.80s' is not a VM name (1 to %d letters, digits, '-', "
		 "'_', '.'; not starting with '.' or '-')",
		 name, VMDEF_NAME_MAX);
	return -EINVAL;
}

int vmdef_home(char *out, size_t len, char *err, size_t errlen)
{
	const char *home = getenv("IMGVM_HOME");
	const char *data = getenv("XDG_DATA_HOME");
	int n;

	if (home && *home)
		n = snprintf(out, len, "%s", home);
	else if (data && *data)
		n = snprintf(out, len, "%s/imgvm", data);
	else if ((home = getenv("HOME")) && *home)
		n = snprintf(out, len, "%s/.local/share/imgvm", home);
	else {
		snprintf(err, errlen,
			 "no folder for VM definitions: set IMGVM_HOME or "
			 "HOME");
		return -ENOENT;
	}
	if (n < 0 || (size_t)n >= len) {
		snprintf(err, errlen, "the VM folder's path is too long");
		return -ENAMETOOLONG;
	}
	return 0;
}

int vmdef_dir(const char *name, char *out, size_t len, char *err, size_t errlen)
{
	char home[PATH_MAX - VMDEF_NAME_MAX - 32];
	int ret = vmdef_check_name(name, err, errlen);

	if (ret || (ret = vmdef_home(home, sizeof(home), err, errlen)))
		return ret;
	if ((size_t)snprintf(out, len, "%s/%s", home, name) >= len) {
		snprintf(err, errlen, "the VM folder's path is too long");
		return -ENAMETOOLONG;
	}
	return 0;
}

/* ---- the definition's text ---------------------------------------------*/

static int check_option(const char *key, json_object *value, char *err,
			size_t errlen)
{
	const struct boot_option_info *info = boot_option_find(key);
	enum json_type type = json_object_get_type(value);

	if (!info) {
		snprintf(err, errlen, "unknown option '%.80s'", key);
		return -EINVAL;
	}
	if (!(info->flags & BOOT_OPTION_VALUE)) {
		if (type != json_type_boolean) {
			snprintf(err, errlen,
				 "option '%s' must be true or false", key);
			return -EINVAL;
		}
		return 0;
	}
	if (type == json_type_string)
		return 0;
	if (type == json_type_array && (info->flags & BOOT_OPTION_REPEATABLE)) {
		size_t n = json_object_array_length(value);

		for (size_t i = 0; i < n; i++) {
			json_object *item = json_object_array_get_idx(value, i);

			if (json_object_get_type(item) != json_type_string) {
				snprintf(err, errlen,
					 "option '%s': every entry must be a "
					 "string",
					 key);
				return -EINVAL;
			}
		}
		return 0;
	}
	snprintf(err, errlen, "option '%s' must be a string%s", key,
		 (info->flags & BOOT_OPTION_REPEATABLE) ? " or a list of them"
							: "");
	return -EINVAL;
}

int vmdef_parse(const char *text, size_t len, const char *name,
		json_object **options, char *err, size_t errlen)
{
	json_object *root, *version, *stored_name = NULL, *opts;
	int ret = -EINVAL;

	*options = NULL;
	err[0] = 0;
	if (len > VMDEF_SIZE_MAX || len > INT_MAX) {
		snprintf(err, errlen, "definition larger than %u bytes",
			 VMDEF_SIZE_MAX);
		return -EFBIG;
	}
	ret = json_text_parse(text, len, 32, &root, err, errlen);
	if (ret)
		return ret;
	ret = -EINVAL;
	if (!json_object_is_type(root, json_type_object) ||
	    !json_object_object_get_ex(root, "imgvm-vm", &version) ||
	    !json_object_is_type(version, json_type_int) ||
	    json_object_get_int64(version) != 1) {
		snprintf(err, errlen, "not an imgvm VM definition (version 1)");
		goto out;
	}
	if (!json_object_object_get_ex(root, "name", &stored_name) ||
	    !json_object_is_type(stored_name, json_type_string) ||
	    vmdef_check_name(json_object_get_string(stored_name), err,
			     errlen)) {
		if (!err[0] || !stored_name)
			snprintf(err, errlen, "no valid \"name\"");
		goto out;
	}
	if (name && strcmp(name, json_object_get_string(stored_name))) {
		snprintf(err, errlen,
			 "the definition names another VM ('%.80s')",
			 json_object_get_string(stored_name));
		goto out;
	}
	if (!json_object_object_get_ex(root, "options", &opts) ||
	    !json_object_is_type(opts, json_type_object)) {
		snprintf(err, errlen, "no \"options\" object");
		goto out;
	}
	json_object_object_foreach(opts, key, value)
	{
		if (check_option(key, value, err, errlen))
			goto out;
	}
	*options = json_object_get(opts);
	ret = 0;
out:
	json_object_put(root);
	return ret;
}

char *vmdef_format(const char *name, json_object *options)
{
	json_object *root = json_object_new_object();
	const char *text;
	char *copy = NULL;

	if (!root)
		return NULL;
	json_object_object_add(root, "imgvm-vm", json_object_new_int(1));
	json_object_object_add(root, "name", json_object_new_string(name));
	json_object_object_add(root, "options", json_object_get(options));
	text = json_object_to_json_string_ext(
		root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
			      JSON_C_TO_STRING_NOSLASHESCAPE);
	if (text && asprintf(&copy, "%s\n", text) < 0)
		copy = NULL;
	json_object_put(root);
	return copy;
}

/* ---- command-line options onto a definition ----------------------------*/

/* value with its file name (up to the first comma) made absolute */
static char *absolute_value(const char *value)
{
	char cwd[PATH_MAX];
	char *out;

	if (value[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return strdup(value);
	if (asprintf(&out, "%s/%s", cwd, value) < 0)
		return NULL;
	return out;
}

/* "new:FMT:SIZE[,options]": create DIR/NAME[-N].FMT, return the option
 * value that names it (with the options kept). */
static char *create_disk(const char *spec, const char *name, const char *dir,
			 char *err, size_t errlen)
{
	char format[16], *rest, *end, path[PATH_MAX], *out = NULL;
	const char *fmt = spec + 4, *colon = strchr(fmt, ':');
	struct img_create_options opts = { .flags = IMG_CREATE_EXCL };
	uint64_t size;
	char size_text[32];
	size_t flen;
	int ret;

	if (!dir) {
		snprintf(err, errlen, "--disk new:... needs a named VM");
		return NULL;
	}
	flen = colon ? (size_t)(colon - fmt) : 0;
	if (!colon || !flen || flen >= sizeof(format)) {
		snprintf(err, errlen, "--disk %.80s: expected new:FORMAT:SIZE",
			 spec);
		return NULL;
	}
	memcpy(format, fmt, flen);
	format[flen] = 0;
	rest = strchr(colon + 1, ',');
	end = rest ? rest : (char *)colon + 1 + strlen(colon + 1);
	if ((size_t)(end - (colon + 1)) >= sizeof(size_text)) {
		snprintf(err, errlen, "--disk %.80s: bad size", spec);
		return NULL;
	}
	memcpy(size_text, colon + 1, (size_t)(end - (colon + 1)));
	size_text[end - (colon + 1)] = 0;
	if (boot_options_parse_size(size_text, &size) || !size) {
		snprintf(err, errlen, "--disk %.80s: bad size '%s'", spec,
			 size_text);
		return NULL;
	}
	opts.format = format;
	opts.size = size;
	for (unsigned n = 1; n < 100; n++) {
		struct stat st;

		if (n == 1)
			snprintf(path, sizeof(path), "%s/%s.%s", dir, name,
				 format);
		else
			snprintf(path, sizeof(path), "%s/%s-%u.%s", dir, name,
				 n, format);
		if (stat(path, &st) == 0)
			continue;
		ret = img_create(path, &opts, err, errlen);
		if (ret)
			return NULL;
		if (asprintf(&out, "%s,format=%s%s", path, format,
			     rest ? rest : "") < 0)
			out = NULL;
		return out;
	}
	snprintf(err, errlen, "--disk new: too many disks named %s-N.%s", name,
		 format);
	return NULL;
}

int vmdef_apply_args(json_object *options, int argc, char **argv,
		     const char *name, const char *dir, json_object *created,
		     char *err, size_t errlen)
{
	/* the repeatable options given in this call: their stored lists are
	 * replaced, not appended to */
	const struct boot_option_info *replaced[16];
	size_t nreplaced = 0;

	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *eq, *value = NULL;
		char key[64];
		const struct boot_option_info *info;
		size_t klen;
		char *stored;

		if (strncmp(arg, "--", 2) || !arg[2]) {
			snprintf(err, errlen, "unexpected argument '%.80s'",
				 arg);
			return -EINVAL;
		}
		arg += 2;
		eq = strchr(arg, '=');
		klen = eq ? (size_t)(eq - arg) : strlen(arg);
		if (klen >= sizeof(key)) {
			snprintf(err, errlen, "unknown option '--%.80s'", arg);
			return -EINVAL;
		}
		memcpy(key, arg, klen);
		key[klen] = 0;
		if (!strcmp(key, "unset")) {
			value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
			if (!value || !boot_option_find(value)) {
				snprintf(err, errlen,
					 "--unset needs an option's name");
				return -EINVAL;
			}
			json_object_object_del(options, value);
			continue;
		}
		info = boot_option_find(key);
		if (!info) {
			snprintf(err, errlen,
				 "unknown option '--%s' (see imgvm --help)",
				 key);
			return -EINVAL;
		}
		if (!(info->flags & BOOT_OPTION_VALUE)) {
			if (eq) {
				snprintf(err, errlen, "--%s takes no value",
					 key);
				return -EINVAL;
			}
			json_object_object_add(options, key,
					       json_object_new_boolean(1));
			continue;
		}
		value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
		if (!value) {
			snprintf(err, errlen, "--%s needs a value", key);
			return -EINVAL;
		}
		if (!strcmp(value, "none")) {
			json_object_object_del(options, key);
			if (info->flags & BOOT_OPTION_REPEATABLE &&
			    nreplaced < 16)
				replaced[nreplaced++] = info;
			continue;
		}
		if (!strcmp(key, "disk") && !strncmp(value, "new:", 4)) {
			stored = create_disk(value, name, dir, err, errlen);
			if (stored && created) {
				char *comma = strchr(stored, ',');
				json_object *s = json_object_new_string_len(
					stored, comma ? (int)(comma - stored)
						      : (int)strlen(stored));

				json_object_array_add(created, s);
			}
		} else if (info->flags & BOOT_OPTION_PATH)
			stored = absolute_value(value);
		else
			stored = strdup(value);
		if (!stored) {
			if (!err[0])
				snprintf(err, errlen, "out of memory");
			return -EINVAL;
		}
		if (info->flags & BOOT_OPTION_REPEATABLE) {
			json_object *list;
			bool seen = false;

			for (size_t r = 0; r < nreplaced; r++)
				seen |= replaced[r] == info;
			if (!seen) {
				if (nreplaced == 16) {
					free(stored);
					snprintf(err, errlen,
						 "too many options");
					return -EINVAL;
				}
				replaced[nreplaced++] = info;
				json_object_object_add(options, key,
						       json_object_new_array());
			}
			json_object_object_get_ex(options, key, &list);
			json_object_array_add(list,
					      json_object_new_string(stored));
		} else {
			json_object_object_add(options, key,
					       json_object_new_string(stored));
		}
		free(stored);
	}
	return 0;
}

int vmdef_to_argv(json_object *options, int *argc_out, char ***argv_out)
{
	size_t cap = 2, n = 0;
	char **argv;

	json_object_object_foreach(options, key0, value0)
	{
		(void)key0;
		cap += json_object_is_type(value0, json_type_array)
			       ? 2 * json_object_array_length(value0)
			       : 2;
	}
	argv = calloc(cap, sizeof(*argv));
	if (!argv)
		return -ENOMEM;
	argv[n++] = strdup("boot");
	json_object_object_foreach(options, key, value)
	{
		char *flag;

		if (asprintf(&flag, "--%s", key) < 0)
			goto nomem;
		switch (json_object_get_type(value)) {
		case json_type_boolean:
			if (json_object_get_boolean(value))
				argv[n++] = flag;
			else
				free(flag);
			break;
		case json_type_array:
			for (size_t i = 0; i < json_object_array_length(value);
			     i++) {
				argv[n++] = i ? strdup(flag) : flag;
				argv[n++] = strdup(json_object_get_string(
					json_object_array_get_idx(value, i)));
			}
			if (!json_object_array_length(value))
				free(flag);
			break;
		default:
			argv[n++] = flag;
			argv[n++] = strdup(json_object_get_string(value));
			break;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (!argv[i])
			goto nomem;
	*argc_out = (int)n;
	*argv_out = argv;
	return 0;
nomem:
	vmdef_free_argv((int)n, argv);
	return -ENOMEM;
}

void vmdef_free_argv(int argc, char **argv)
{
	if (!argv)
		return;
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	free(argv);
}

/* ---- files -------------------------------------------------------------*/

int vmdef_load(const char *name, json_object **options, char *err,
	       size_t errlen)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], *text;
	struct stat st;
	ssize_t got;
	int fd, ret;

	if ((ret = vmdef_dir(name, dir, sizeof(dir), err, errlen)))
		return ret;
	snprintf(path, sizeof(path), "%s/" VMDEF_FILE, dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		if (errno == ENOENT)
			snprintf(err, errlen, "no VM named '%s'", name);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) || st.st_size > VMDEF_SIZE_MAX) {
		close(fd);
		snprintf(err, errlen, "%s: not a definition (over %u bytes)",
			 path, VMDEF_SIZE_MAX);
		return -EFBIG;
	}
	text = malloc((size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return -ENOMEM;
	}
	got = pread(fd, text, (size_t)st.st_size, 0);
	close(fd);
	if (got != st.st_size) {
		free(text);
		snprintf(err, errlen, "%s: short read", path);
		return -EIO;
	}
	text[got] = 0;
	ret = vmdef_parse(text, (size_t)got, name, options, err, errlen);
	free(text);
	if (ret) {
		char inner[256];

		snprintf(inner, sizeof(inner), "%s", err);
		snprintf(err, errlen, "%s: %s", path, inner);
	}
	return ret;
}

int vmdef_save(const char *name, json_object *options, char *err, size_t errlen)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], tmp[PATH_MAX + 32];
	char *text = NULL;
	size_t len, done = 0;
	int fd = -1, dfd, ret;

	if ((ret = vmdef_dir(name, dir, sizeof(dir), err, errlen)))
		return ret;
	snprintf(path, sizeof(path), "%s/" VMDEF_FILE, dir);
	snprintf(tmp, sizeof(tmp), "%s/." VMDEF_FILE ".%ld.tmp", dir,
		 (long)getpid());
	text = vmdef_format(name, options);
	if (!text) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	len = strlen(text);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto fail;
	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		done += (size_t)n;
	}
	if (fsync(fd) || close(fd)) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path))
		goto fail;
	/* the rename itself reaches the disk with the folder */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(text);
	return 0;
fail:
	ret = -errno;
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(text);
	return ret ? ret : -EIO;
}

const char **vmdef_disks(json_object *options, size_t *count,
			 bool writable_only)
{
	json_object *list;
	const char **out;
	size_t n = 0, len;

	*count = 0;
	if (!json_object_object_get_ex(options, "disk", &list))
		return NULL;
	if (json_object_is_type(list, json_type_string)) {
		/* a single disk stored as a plain string */
		out = calloc(1, sizeof(*out));
		if (!out)
			return NULL;
		if (writable_only &&
		    strstr(json_object_get_string(list), ",readonly"))
			return out;
		out[0] = json_object_get_string(list);
		*count = 1;
		return out;
	}
	len = json_object_array_length(list);
	out = calloc(len ? len : 1, sizeof(*out));
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		const char *v = json_object_get_string(
			json_object_array_get_idx(list, i));

		if (writable_only && strstr(v, ",readonly"))
			continue;
		out[n++] = v;
	}
	*count = n;
	return out;
}

void vmdef_remove_created(json_object *created)
{
	for (size_t i = 0; created && i < json_object_array_length(created);
	     i++)
		unlink(json_object_get_string(
			json_object_array_get_idx(created, i)));
}

int vmdef_lock(const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX + 16];
	int fd;

	snprintf(path, sizeof(path), "%s/" VMDEF_LOCK, dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		int ret = errno == EWOULDBLOCK ? -EBUSY : -errno;

		snprintf(err, errlen, "%s",
			 ret == -EBUSY ? "the VM is running" : strerror(errno));
		close(fd);
		return ret;
	}
	return fd;
}

bool vmdef_running(const char *dir)
{
	char err[64];
	int fd = vmdef_lock(dir, err, sizeof(err));

	if (fd == -EBUSY)
		return true;
	if (fd >= 0)
		close(fd);
	return false;
}

int vmdef_mkdirs(const char *path)
{
	char buf[PATH_MAX];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

int vmdef_check_options(json_object *options)
{
	struct boot_options opt;
	char **argv;
	int argc, ret;

	if (vmdef_to_argv(options, &argc, &argv)) {
		fprintf(stderr, "imgvm: out of memory\n");
		return -ENOMEM;
	}
	ret = boot_options_parse(argc, argv, &opt);
	vmdef_free_argv(argc, argv);
	return ret ? -EINVAL : 0;
}

int vmdef_update(json_object *options, int argc, char **argv, const char *name,
		 const char *dir)
{
	json_object *created = json_object_new_array();
	char err[512] = "";
	int ret;

	if (!created) {
		fprintf(stderr, "imgvm: out of memory\n");
		return -ENOMEM;
	}
	ret = vmdef_apply_args(options, argc, argv, name, dir, created, err,
			       sizeof(err));
	if (ret)
		fprintf(stderr, "imgvm: %s\n", err);
	else if (!(ret = vmdef_check_options(options)) &&
		 (ret = vmdef_save(name, options, err, sizeof(err))))
		fprintf(stderr, "imgvm: %s\n", err);
	if (ret)
		vmdef_remove_created(created);
	json_object_put(created);
	return ret;
}
