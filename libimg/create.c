/* SPDX-License-Identifier: MIT */
/* Creating images: the generic options, then the driver's create. */
#include "driver.h"
#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- create --------------------------------------------------------------*/

/* Splits "a=1,b=x,,y" in place (",," is a literal comma) into args->opts,
 * taking the generic keys out. */
static int parse_create_options(char *s, const struct img_driver *drv,
				struct img_create_args *args, char *errbuf,
				size_t errlen)
{
	while (s && *s) {
		char *key = s, *value = NULL, *w = s, *p = s;
		uint64_t num;

		/* Find the end of this item, unescaping ",,". */
		for (;;) {
			if (*p == ',' && p[1] == ',') {
				*w++ = ',';
				p += 2;
			} else if (*p == ',' || *p == '\0') {
				break;
			} else {
				*w++ = *p++;
			}
		}
		s = *p ? p + 1 : NULL;
		*w = '\0';
		if (!*key)
			continue;
		value = strchr(key, '=');
		if (value)
			*value++ = '\0';
		else
			value = "on";

		if (strcmp(key, "subformat") == 0) {
			args->subformat = value;
		} else if (strcmp(key, "cluster_size") == 0 ||
			   strcmp(key, "block_size") == 0 ||
			   strcmp(key, "grain_size") == 0) {
			if (img_parse_size(value, &num) < 0 || num == 0 ||
			    num > UINT32_MAX)
				return img_error_buf(errbuf, errlen, -EINVAL,
						     "invalid %s '%s'", key,
						     value);
			args->cluster_size = (uint32_t)num;
		} else if (strcmp(key, "preallocation") == 0) {
			if (strcmp(value, "off") == 0)
				args->preallocate = false;
			else if (strcmp(value, "full") == 0 ||
				 strcmp(value, "falloc") == 0)
				args->preallocate = true;
			else
				return img_error_buf(
					errbuf, errlen, -EINVAL,
					"invalid preallocation '%s' (off, full or falloc)",
					value);
		} else if (strcmp(key, "size") == 0) {
			if (img_parse_size(value, &num) < 0)
				return img_error_buf(errbuf, errlen, -EINVAL,
						     "invalid size '%s'",
						     value);
			args->size = num;
		} else if (strcmp(key, "backing_file") == 0) {
			args->backing_file = value;
		} else if (strcmp(key, "backing_fmt") == 0) {
			args->backing_format = value;
		} else {
			bool known = false;

			for (const char *const *o = drv->create_options;
			     o && *o && !known; o++)
				known = strcmp(*o, key) == 0;
			if (!known)
				return img_error_buf(
					errbuf, errlen, -EINVAL,
					"unknown option '%s' for format %s",
					key, drv->name);
			if (args->nopts >=
			    (int)(sizeof(args->opts) / sizeof(args->opts[0])))
				return img_error_buf(errbuf, errlen, -E2BIG,
						     "too many options");
			args->opts[args->nopts].key = key;
			args->opts[args->nopts].value = value;
			args->nopts++;
		}
	}
	return 0;
}

int img_create(const char *path, const struct img_create_options *opts,
	       char *errbuf, size_t errlen)
{
	struct img_create_args args = { 0 };
	const struct img_driver *drv;
	char ebuf[IMG_ERRMSG_MAX] = "";
	char *optcopy = NULL, *dir = NULL, *parent_path = NULL;
	struct img *parent = NULL;
	bool existed = true;
	const char *fmt;
	struct stat st;
	size_t plen;
	int r;

	if (!path || !*path)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "no image file name given");
	fmt = opts && opts->format ? opts->format : "raw";
	drv = img_driver_find(fmt);
	if (!drv)
		return img_unknown_format(errbuf, errlen, NULL, fmt);
	if (!drv->create)
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "%s: format %s cannot create images", path,
				     drv->name);
	args.path = path;
	if (opts) {
		args.size = opts->size;
		args.subformat = opts->subformat;
		args.cluster_size = opts->cluster_size;
		args.backing_file = opts->backing_file;
		args.backing_format = opts->backing_format;
		args.excl = opts->flags & IMG_CREATE_EXCL;
		args.preallocate = opts->flags & IMG_CREATE_PREALLOCATE;
		if (opts->options) {
			optcopy = strdup(opts->options);
			if (!optcopy)
				return img_error_buf(errbuf, errlen, -ENOMEM,
						     "out of memory");
			r = parse_create_options(optcopy, drv, &args, ebuf,
						 sizeof(ebuf));
			if (r < 0)
				goto fail;
		}
	}
	if (args.backing_file && *args.backing_file) {
		struct img_open_options po = { .format = args.backing_format,
					       .flags = IMG_OPEN_RDONLY };

		dir = img_path_dirname(path);
		parent_path = dir ? img_path_resolve(dir, args.backing_file)
				  : NULL;
		if (!parent_path) {
			r = img_error_buf(ebuf, sizeof(ebuf), -ENOMEM,
					  "out of memory");
			goto fail;
		}
		r = img_open(&parent, parent_path, &po, ebuf, sizeof(ebuf));
		if (r < 0) {
			char pmsg[IMG_ERRMSG_MAX];

			snprintf(pmsg, sizeof(pmsg), "%s", ebuf);
			img_error_buf(ebuf, sizeof(ebuf), r,
				      "cannot open backing file: %s", pmsg);
			goto fail;
		}
		if (args.size == 0)
			args.size = parent->size;
		if (!args.backing_format)
			args.backing_format = parent->drv->name;
		args.backing = parent;
	} else {
		args.backing_file = NULL;
	}
	ebuf[0] = '\0';
	existed = img_name_is_local(path) ? lstat(path, &st) == 0 : false;
	r = drv->create(&args, ebuf, sizeof(ebuf));
	if (r < 0 && !ebuf[0])
		snprintf(ebuf, sizeof(ebuf), "cannot create %s image: %s",
			 drv->name, strerror(-r));
	/* A failed create leaves no half-made image behind (a file that was
	 * there before is the caller's and stays). */
	if (r < 0 && !existed && r != -EEXIST)
		img_file_remove_name(path, NULL, 0);
fail:
	if (r < 0) {
		plen = strlen(path);
		if (strncmp(ebuf, path, plen) == 0 && ebuf[plen] == ':')
			img_error_buf(errbuf, errlen, r, "%s", ebuf);
		else
			img_error_buf(errbuf, errlen, r, "%s: %s", path, ebuf);
	}
	if (parent)
		img_close(parent);
	free(parent_path);
	free(dir);
	free(optcopy);
	return r;
}
