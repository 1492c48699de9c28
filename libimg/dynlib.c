/* SPDX-License-Identifier: MIT */
/*
 * Loading a backend's library at its first use (see dynlib.h).
 */
#include "dynlib.h"
#include "driver.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>

static int dynlib_open(struct img_dynlib *lib)
{
	void *handle;

	/* RTLD_NODELETE: pointers taken from it stay valid for good, and
	 * libraries with threads of their own (librados) are never unmapped
	 * under them */
	handle = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (!handle) {
		snprintf(lib->error, sizeof(lib->error),
			 "%s is not installed (Debian package %s): %s",
			 lib->soname, lib->package, dlerror());
		return -ENOTSUP;
	}
	void **slot = lib->slots;
	for (size_t i = 0; lib->names[i]; i++) {
		/* the symbols of its dependencies too (librados's for librbd) */
		slot[i] = dlsym(handle, lib->names[i]);
		if (!slot[i]) {
			snprintf(lib->error, sizeof(lib->error),
				 "%s has no %s (too old a version of %s?)",
				 lib->soname, lib->names[i], lib->package);
			return -ENOTSUP;
		}
	}
	return 0;
}

int img_dynlib_load(struct img_dynlib *lib, char *errbuf, size_t errlen)
{
	int err;

	pthread_mutex_lock(&lib->lock);
	if (!lib->tried) {
		lib->err = dynlib_open(lib);
		lib->tried = true;
	}
	err = lib->err;
	pthread_mutex_unlock(&lib->lock);
	if (err < 0)
		return img_error_buf(errbuf, errlen, err, "%s", lib->error);
	return 0;
}
