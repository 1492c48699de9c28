/* SPDX-License-Identifier: MIT */
/*
 * VHD differencing chains: the parent locators (read to find the parent,
 * written at create and rebase), the parent's identity and set_backing.
 */
#include "vhd_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- parent locators -----------------------------------------------------*/

struct vhd_candidates {
	int n;
	char path[VHD_MAX_CANDIDATES][PATH_MAX];
};

static void vhd_candidate_add(struct vhd_candidates *c, const char *path)
{
	if (!path[0] || c->n == VHD_MAX_CANDIDATES)
		return;
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->path[i], path))
			return;
	snprintf(c->path[c->n++], PATH_MAX, "%s", path);
}

static const char *vhd_basename(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* The locator's data as a host path; 0 and an empty string when the
 * platform code is not one we read. */
int vhd_locator_read(struct img *img, struct vhd_state *s,
		     const struct vhd_locator *l, char *out, size_t out_max,
		     bool *usable)
{
	uint8_t *data = NULL;
	char text[PATH_MAX];
	int ret = 0;

	out[0] = '\0';
	*usable = false;
	switch (l->platform_code) {
	case VHD_PLATFORM_W2RU:
	case VHD_PLATFORM_W2KU:
	case VHD_PLATFORM_WI2R:
	case VHD_PLATFORM_WI2K:
	case VHD_PLATFORM_MACX:
		break;
	default:
		return 0;
	}
	if (!l->data_length)
		return 0;
	if (l->data_length > VHD_MAX_LOCATOR_DATA ||
	    l->data_offset > s->file_size ||
	    l->data_length > s->file_size - l->data_offset)
		return img_error(img, -EINVAL,
				 "parent locator data (%u bytes at %llu) lies "
				 "outside the file",
				 l->data_length,
				 (unsigned long long)l->data_offset);
	data = malloc(l->data_length + 1);
	if (!data)
		return img_error(img, -ENOMEM, "out of memory");
	ret = img_file_pread(&s->file, data, l->data_length, l->data_offset);
	if (ret)
		goto fail;
	data[l->data_length] = '\0';
	switch (l->platform_code) {
	case VHD_PLATFORM_W2RU:
	case VHD_PLATFORM_W2KU:
		ret = vhd_utf16_to_utf8(data, l->data_length, false, text,
					sizeof(text));
		break;
	case VHD_PLATFORM_MACX:
		ret = vhd_url_to_path((char *)data, out, out_max);
		*usable = !ret && out[0];
		ret = 0; /* a bad URL is just not a candidate */
		goto fail;
	default:
		snprintf(text, sizeof(text), "%s", (char *)data);
		break;
	}
	if (ret) {
		ret = 0; /* undecodable: not a candidate, not fatal */
		goto fail;
	}
	*usable = vhd_windows_path_to_host(text, out, out_max);
fail:
	free(data);
	return ret;
}

int vhd_declare_parent(struct img *img, struct vhd_state *s)
{
	static const uint32_t order[] = {
		VHD_PLATFORM_W2RU, VHD_PLATFORM_WI2R, VHD_PLATFORM_MACX,
		VHD_PLATFORM_W2KU, VHD_PLATFORM_WI2K,
	};
	struct vhd_candidates *c = calloc(1, sizeof(*c));
	char *names = NULL, path[PATH_MAX];
	int nnames = 0, ret = 0;

	names = calloc(VHD_MAX_LOCATORS + 1, PATH_MAX);
	if (!c || !names) {
		ret = img_error(img, -ENOMEM, "out of memory");
		goto fail;
	}
	/* Locators, relative ones first; remember every basename. */
	for (size_t o = 0; o < sizeof(order) / sizeof(order[0]); o++) {
		for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
			const struct vhd_locator *l = &s->header.locators[i];
			bool usable;

			if (l->platform_code != order[o])
				continue;
			ret = vhd_locator_read(img, s, l, path, sizeof(path),
					       &usable);
			if (ret)
				goto fail;
			if (usable)
				vhd_candidate_add(c, path);
			if (path[0])
				snprintf(names + (size_t)nnames++ * PATH_MAX,
					 PATH_MAX, "%s", vhd_basename(path));
			if (!s->backing_name[0] && usable)
				snprintf(s->backing_name,
					 sizeof(s->backing_name), "%s", path);
		}
	}
	/* The parent's unicode name: a bare name, or a full Windows path. */
	if (!vhd_utf16_to_utf8(s->header.parent_name,
			       sizeof(s->header.parent_name), true, path,
			       sizeof(path)) &&
	    path[0]) {
		char host[PATH_MAX];
		bool usable =
			vhd_windows_path_to_host(path, host, sizeof(host));

		if (usable)
			vhd_candidate_add(c, host);
		if (host[0])
			snprintf(names + (size_t)nnames++ * PATH_MAX, PATH_MAX,
				 "%s", vhd_basename(host));
		if (!s->backing_name[0])
			snprintf(s->backing_name, sizeof(s->backing_name), "%s",
				 usable ? host : path);
	}
	/* Then the bare names, next to the child. */
	for (int i = 0; i < nnames; i++)
		vhd_candidate_add(c, names + (size_t)i * PATH_MAX);

	for (int i = 0; i < c->n; i++) {
		ret = img_add_backing_candidate(img, c->path[i], NULL);
		if (ret)
			goto fail;
	}
	/* Last resort: a VHD with the recorded UUID next to the child or in
	 * the search directories. */
	if (memcmp(s->header.parent_uuid, (uint8_t[16]){ 0 }, 16))
		img_set_backing_by_identity(img, "vhd");
fail:
	free(names);
	free(c);
	return ret;
}

static void vhd_dirname(const char *path, char *out, size_t out_max)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(out, out_max, ".");
	else if (slash == path)
		snprintf(out, out_max, "/");
	else
		snprintf(out, out_max, "%.*s", (int)(slash - path), path);
}

/* Build the locators for backing_file (as recorded: relative to the
 * child's directory, or absolute): W2ku (absolute), W2ru (relative), MacX
 * (URL).  Also fills the UTF-16BE parent name.  Returns the count. */
int vhd_build_locators(const char *child_path, const char *backing_file,
		       struct vhd_locator_data *loc, uint8_t parent_name[512])
{
	char dir[PATH_MAX], real_dir[PATH_MAX], joined[PATH_MAX];
	char absolute[PATH_MAX], relative[PATH_MAX], text[3 * PATH_MAX];
	int len, n = 0;

	vhd_dirname(child_path, dir, sizeof(dir));
	if (!realpath(dir, real_dir))
		snprintf(real_dir, sizeof(real_dir), "%s", dir);
	if (backing_file[0] == '/')
		len = snprintf(joined, sizeof(joined), "%s", backing_file);
	else
		len = snprintf(joined, sizeof(joined), "%s/%s", real_dir,
			       backing_file);
	if (len < 0 || (size_t)len >= sizeof(joined))
		return -ENAMETOOLONG;
	if (!realpath(joined, absolute))
		memcpy(absolute, joined, sizeof(absolute));
	if (backing_file[0] != '/')
		snprintf(relative, sizeof(relative), "%s", backing_file);
	else if (img_path_relative(real_dir, absolute, relative,
				   sizeof(relative)) < 0)
		return -ENAMETOOLONG;

	/* The name field holds 255 UTF-16 units: long paths keep their
	 * file name only (the locators have the full paths). */
	memset(parent_name, 0, 512);
	len = vhd_utf8_to_utf16(backing_file, parent_name, 510, true);
	if (len == -ENAMETOOLONG) {
		memset(parent_name, 0, 512);
		len = vhd_utf8_to_utf16(vhd_basename(backing_file), parent_name,
					510, true);
	}
	if (len < 0)
		return len;

	vhd_host_path_to_windows(absolute, text, sizeof(text));
	len = vhd_utf8_to_utf16(text, loc[n].data, sizeof(loc[n].data), false);
	if (len < 0)
		return len;
	loc[n].code = VHD_PLATFORM_W2KU;
	loc[n++].length = (uint32_t)len;

	if (relative[0] == '.' && relative[1] == '.')
		vhd_host_path_to_windows(relative, text, sizeof(text));
	else {
		char prefixed[PATH_MAX + 2];

		snprintf(prefixed, sizeof(prefixed), "./%s", relative);
		vhd_host_path_to_windows(prefixed, text, sizeof(text));
	}
	len = vhd_utf8_to_utf16(text, loc[n].data, sizeof(loc[n].data), false);
	if (len < 0)
		return len;
	loc[n].code = VHD_PLATFORM_W2RU;
	loc[n++].length = (uint32_t)len;

	len = vhd_path_to_url(absolute, (char *)loc[n].data,
			      sizeof(loc[n].data));
	if (len < 0)
		return len;
	loc[n].code = VHD_PLATFORM_MACX;
	loc[n].length = (uint32_t)strlen((char *)loc[n].data);
	n++;
	return n;
}

/* The parent's identity as a VHD child records it. */
void vhd_parent_identity(struct img *parent, uint8_t uuid[16],
			 uint32_t *timestamp)
{
	struct stat st;

	memset(uuid, 0, 16);
	*timestamp = 0;
	if (!parent)
		return;
	if (!strcmp(img_format(parent), "vhd")) {
		const struct vhd_state *ps = img_state(parent);

		memcpy(uuid, ps->footer.uuid, 16);
	}
	/* The spec: "the modification time stamp of the parent". */
	if (!stat(img_filename(parent), &st))
		*timestamp = vhd_timestamp_from_unix(st.st_mtime);
}

/* ---- chains --------------------------------------------------------------*/

int vhd_backing_matches(struct img *img, struct img *parent)
{
	struct vhd_state *s = img_state(img);
	static const uint8_t zero[16];
	char want[40], have[40];
	const struct vhd_state *ps;

	if (s->footer.disk_type != VHD_TYPE_DIFFERENCING ||
	    strcmp(img_format(parent), "vhd") ||
	    !memcmp(s->header.parent_uuid, zero, 16))
		return 0;
	ps = img_state(parent);
	if (!memcmp(ps->footer.uuid, s->header.parent_uuid, 16))
		return 0;
	img_uuid_format(s->header.parent_uuid, want);
	img_uuid_format(ps->footer.uuid, have);
	return img_error(img, -ESTALE,
			 "parent %s has UUID %s but this differencing disk "
			 "was made for %s",
			 img_filename(parent), have, want);
}

/* Space for locator data: reuse the old slot when it is big enough, else
 * append at the end of the file (the trailing footer moves). */
static int vhd_locator_store(struct vhd_state *s, struct vhd_locator *l,
			     const struct vhd_locator_data *d)
{
	uint32_t space = (uint32_t)round_up(MAX(d->length, 1), VHD_SECTOR);
	uint8_t *buf;
	uint64_t at;
	bool append;
	int ret;

	/* Old tools count data_space in sectors, newer ones in bytes. */
	uint64_t old_space = l->data_space >= l->data_length
				     ? l->data_space
				     : (uint64_t)l->data_space * VHD_SECTOR;

	append = !l->platform_code || !l->data_offset || old_space < space ||
		 l->data_offset + old_space > s->alloc_offset;
	at = append ? s->alloc_offset : l->data_offset;
	buf = calloc(1, space);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, d->data, d->length);
	ret = img_file_pwrite(&s->file, buf, space, at);
	free(buf);
	if (ret)
		return ret;
	if (append) {
		s->alloc_offset += space;
		ret = vhd_write_footer_at(s, s->alloc_offset);
		if (ret)
			return ret;
		/* The old slot belongs to nothing now: clear it so that
		 * check does not count it as a leak. */
		if (l->platform_code && l->data_offset &&
		    l->data_offset + old_space <= at) {
			ret = img_file_zero_range(&s->file, l->data_offset,
						  old_space);
			if (ret)
				return ret;
		}
		l->data_space = space;
	}
	l->platform_code = d->code;
	l->data_length = d->length;
	l->data_offset = at;
	return 0;
}

int vhd_set_backing(struct img *img, const char *backing_file,
		    const char *backing_format, struct img *parent)
{
	struct vhd_state *s = img_state(img);
	struct vhd_locator_data *loc = NULL;
	struct vhd_header h = s->header;
	int ret, nloc = 0;

	(void)backing_format;
	ret = vhd_check_writable(img, s);
	if (ret)
		return ret;
	if (!vhd_is_sparse(s))
		return img_error(img, -ENOTSUP,
				 "a fixed VHD cannot have a backing file");
	ret = vhd_commit_pending(s);
	if (ret)
		return ret;
	memset(h.parent_uuid, 0, sizeof(h.parent_uuid));
	memset(h.parent_name, 0, sizeof(h.parent_name));
	h.parent_timestamp = 0;
	if (backing_file) {
		loc = calloc(VHD_MAX_LOCATORS, sizeof(*loc));
		if (!loc)
			return img_error(img, -ENOMEM, "out of memory");
		nloc = vhd_build_locators(img_filename(img), backing_file, loc,
					  h.parent_name);
		if (nloc < 0) {
			ret = img_error(img, nloc,
					"backing file name '%s' cannot be "
					"recorded",
					backing_file);
			goto fail;
		}
		vhd_parent_identity(parent, h.parent_uuid, &h.parent_timestamp);
	}
	/* Reuse slots in order; unused ones are cleared. */
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		struct vhd_locator *l = &h.locators[i];

		if (i < nloc) {
			ret = vhd_locator_store(s, l, &loc[i]);
			if (ret)
				goto fail;
		} else {
			if (l->platform_code && l->data_length &&
			    l->data_offset + l->data_length <= s->alloc_offset)
				img_file_punch_hole(&s->file, l->data_offset,
						    round_up(l->data_length,
							     VHD_SECTOR));
			memset(l, 0, sizeof(*l));
		}
	}
	/* Locator data before the header that points at it. */
	ret = img_file_sync(&s->file);
	if (ret)
		goto fail;
	s->header = h;
	ret = vhd_write_header(s);
	if (ret)
		goto fail;
	s->footer.disk_type = backing_file ? VHD_TYPE_DIFFERENCING
					   : VHD_TYPE_DYNAMIC;
	ret = vhd_write_footers(s);
	if (ret)
		goto fail;
	s->header_checksum_ok = true;
	snprintf(s->backing_name, sizeof(s->backing_name), "%s",
		 backing_file ? backing_file : "");
	ret = img_file_sync(&s->file);
fail:
	free(loc);
	return ret;
}
