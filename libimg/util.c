/* SPDX-License-Identifier: MIT */
/*
 * libimg utilities: sizes, iovecs, UUIDs, error buffers, the format list.
 */
#include "driver.h"
#include "internal.h"

#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

const char *img_version(void)
{
	return IMG_VERSION;
}

int img_error_buf(char *buf, size_t len, int err, const char *fmt, ...)
{
	va_list ap;

	if (buf && len) {
		va_start(ap, fmt);
		vsnprintf(buf, len, fmt, ap);
		va_end(ap);
	}
	return err;
}

/* ---- sizes ---------------------------------------------------------------*/

static int size_suffix_shift(const char *s, unsigned *shift)
{
	static const char units[] = "KMGTPE";
	const char *u;

	if (*s == '\0' || ((*s == 'b' || *s == 'B') && s[1] == '\0')) {
		*shift = 0;
		return 0;
	}
	if (*s == 's' && s[1] == '\0') {
		*shift = 9;
		return 0;
	}
	u = strchr(units, toupper((unsigned char)*s));
	if (!u)
		return -EINVAL;
	*shift = 10 * (unsigned)(u - units + 1);
	s++;
	/* "K", "KB", "KiB" all mean 1024: sizes of disks are binary. */
	if (*s == '\0' || strcmp(s, "B") == 0 || strcmp(s, "iB") == 0 ||
	    strcmp(s, "b") == 0 || strcmp(s, "ib") == 0)
		return 0;
	return -EINVAL;
}

int img_parse_size(const char *text, uint64_t *out)
{
	const char *p = text;
	uint64_t whole = 0, frac = 0, frac_div = 1, value;
	unsigned shift;
	int ndigits = 0, nfrac = 0;

	if (!text)
		return -EINVAL;
	while (isspace((unsigned char)*p))
		p++;
	for (; isdigit((unsigned char)*p); p++, ndigits++) {
		unsigned d = (unsigned)(*p - '0');

		if (whole > (UINT64_MAX - d) / 10)
			return -ERANGE;
		whole = whole * 10 + d;
	}
	if (*p == '.') {
		for (p++; isdigit((unsigned char)*p); p++, nfrac++) {
			/* Digits past 18 cannot matter at byte precision. */
			if (nfrac >= 18)
				continue;
			frac = frac * 10 + (unsigned)(*p - '0');
			frac_div *= 10;
		}
		if (nfrac == 0)
			return -EINVAL;
	}
	if (ndigits == 0 && nfrac == 0)
		return -EINVAL;
	if (size_suffix_shift(p, &shift) < 0)
		return -EINVAL;
	/* A fraction of a byte or a sector is not a size. */
	if (frac && shift < 10)
		return -EINVAL;
	if (shift >= 64 || whole > (UINT64_MAX >> shift))
		return whole ? -ERANGE : (*out = 0, 0);
	value = whole << shift;
	if (frac) {
		/* frac / frac_div < 1, and shift <= 60: the product fits in
		 * 128 bits. */
		unsigned __int128 f = ((unsigned __int128)frac << shift);

		f /= frac_div;
		if (value > UINT64_MAX - (uint64_t)f)
			return -ERANGE;
		value += (uint64_t)f;
	}
	*out = value;
	return 0;
}

const char *img_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B",   "KiB", "MiB", "GiB",
					     "TiB", "PiB", "EiB" };
	int u = 0;
	double v = (double)bytes;

	while (v >= 1024.0 && u < 6) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else if (v >= 1000.0)
		snprintf(buf, len, "%.0f %s", v, units[u]);
	else
		snprintf(buf, len, "%.3g %s", v, units[u]);
	return buf;
}

/* ---- paths ---------------------------------------------------------------*/

int img_path_relative(const char *dir, const char *target, char *out,
		      size_t outlen)
{
	size_t common = 0, i, pos = 0;
	int ups = 0;
	int n;

	/* the longest common prefix that ends at a directory boundary */
	for (i = 0; dir[i] && dir[i] == target[i]; i++)
		if (dir[i] == '/')
			common = i;
	if (!dir[i] && target[i] == '/')
		common = i;
	if (strcmp(dir, "/") == 0)
		common = 0;
	for (const char *p = dir + common; *p; p++) {
		if (*p != '/' || !p[1])
			continue;
		if (pos + 3 >= outlen)
			return -ENAMETOOLONG;
		memcpy(out + pos, "../", 3);
		pos += 3;
		ups++;
	}
	if (target[common] == '/')
		common++;
	n = snprintf(out + pos, outlen - pos, "%s", target + common);
	if (n < 0 || (size_t)n >= outlen - pos)
		return -ENAMETOOLONG;
	return ups;
}

/* ---- identity ------------------------------------------------------------*/

void img_random_bytes(void *buf, size_t len)
{
	unsigned char *p = buf;

	while (len) {
		ssize_t r = getrandom(p, len, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		p += r;
		len -= (size_t)r;
	}
	if (len) {
		/* getrandom is missing (old kernel): fall back to urandom,
		 * and as a last resort to rand() so a UUID is never all
		 * zeros. */
		int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			ssize_t r = read(fd, p, len);

			if (r > 0) {
				p += r;
				len -= (size_t)r;
			}
			close(fd);
		}
		while (len--)
			*p++ = (unsigned char)rand();
	}
}

int img_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void img_uuid_format(const uint8_t uuid[16], char out[37])
{
	snprintf(
		out, 37,
		"%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6],
		uuid[7], uuid[8], uuid[9], uuid[10], uuid[11], uuid[12],
		uuid[13], uuid[14], uuid[15]);
}

void img_check_note(struct img_check_result *res, const char *fmt, ...)
{
	va_list ap;

	if (!res || res->nmessages >= IMG_CHECK_MAX_MESSAGES)
		return;
	va_start(ap, fmt);
	vsnprintf(res->messages[res->nmessages], sizeof(res->messages[0]), fmt,
		  ap);
	va_end(ap);
	res->nmessages++;
}

/* ---- formats -------------------------------------------------------------*/

static const struct img_driver *test_driver;

void img_test_set_extra_driver(const struct img_driver *drv)
{
	test_driver = drv;
}

const struct img_driver *img_driver_at(int i)
{
	if (i == IMG_NDRIVERS)
		return test_driver;
	return i >= 0 && i < IMG_NDRIVERS ? img_drivers[i] : NULL;
}

const struct img_driver *img_driver_find(const char *name)
{
	if (!name)
		return NULL;
	for (int i = 0; i <= IMG_NDRIVERS; i++) {
		const struct img_driver *drv = img_driver_at(i);

		if (!drv)
			continue;
		if (strcasecmp(drv->name, name) == 0)
			return drv;
		for (const char *const *a = drv->aliases; a && *a; a++)
			if (strcasecmp(*a, name) == 0)
				return drv;
	}
	return NULL;
}

const char *const *img_formats(void)
{
	/* The table is constant after load, so filling this twice from two
	 * threads writes the same values. */
	static const char *names[IMG_NDRIVERS + 1];
	int n = 0;

	for (int i = 0; i < IMG_NDRIVERS; i++)
		if (img_drivers[i])
			names[n++] = img_drivers[i]->name;
	names[n] = NULL;
	return names;
}

const char *img_format_canonical(const char *name)
{
	const struct img_driver *drv = img_driver_find(name);

	return drv ? drv->name : NULL;
}

const char *const *img_format_create_options(const char *format)
{
	static const char *const none[] = { NULL };
	const struct img_driver *drv = img_driver_find(format);

	if (!drv)
		return NULL;
	return drv->create_options ? drv->create_options : none;
}

unsigned img_format_caps(const char *format)
{
	const struct img_driver *drv = img_driver_find(format);
	unsigned caps = 0;

	if (!drv)
		return 0;
	if (drv->set_backing)
		caps |= IMG_FORMAT_BACKING;
	if ((drv->flags & IMG_DRV_COMPRESSED_WRITES) ||
	    drv->compressed_subformat)
		caps |= IMG_FORMAT_COMPRESS;
	return caps;
}

const char *img_format_compressed_subformat(const char *format)
{
	const struct img_driver *drv = img_driver_find(format);

	return drv ? drv->compressed_subformat : NULL;
}

const char *img_create_arg(const struct img_create_args *a, const char *key)
{
	for (int i = 0; i < a->nopts; i++)
		if (strcmp(a->opts[i].key, key) == 0)
			return a->opts[i].value;
	return NULL;
}

static struct img_kv *info_new_kv(struct img_info *info, const char *key,
				  enum img_kv_type type)
{
	struct img_kv *kv;

	/* grown in steps of 16; a failed allocation drops the fact */
	if (info->nkv % 16 == 0) {
		kv = realloc(info->kv, sizeof(*kv) * (size_t)(info->nkv + 16));
		if (!kv)
			return NULL;
		info->kv = kv;
	}
	kv = &info->kv[info->nkv++];
	memset(kv, 0, sizeof(*kv));
	snprintf(kv->key, sizeof(kv->key), "%s", key);
	kv->type = type;
	return kv;
}

void img_info_add_str(struct img_info *info, const char *key, const char *value)
{
	struct img_kv *kv = info_new_kv(info, key, IMG_KV_STRING);

	if (kv)
		snprintf(kv->str, sizeof(kv->str), "%s", value);
}

void img_info_add_int(struct img_info *info, const char *key, int64_t value)
{
	struct img_kv *kv = info_new_kv(info, key, IMG_KV_INT);

	if (kv)
		kv->num = value;
}

void img_info_add_bool(struct img_info *info, const char *key, bool value)
{
	struct img_kv *kv = info_new_kv(info, key, IMG_KV_BOOL);

	if (kv)
		kv->num = value;
}

void img_info_add_file(struct img_info *info, const char *path)
{
	char **files, *copy;

	for (int i = 0; i < info->nfiles; i++)
		if (!strcmp(info->files[i], path))
			return;
	files = realloc(info->files,
			sizeof(*files) * (size_t)(info->nfiles + 1));
	if (!files)
		return;
	info->files = files;
	copy = strdup(path);
	if (copy)
		info->files[info->nfiles++] = copy;
}

void img_info_free(struct img_info *info)
{
	if (!info)
		return;
	for (int i = 0; i < info->nfiles; i++)
		free(info->files[i]);
	free(info->files);
	free(info->kv);
	free(info);
}
