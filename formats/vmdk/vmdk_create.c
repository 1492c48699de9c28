/* SPDX-License-Identifier: MIT */
/*
 * VMDK create (the five subformats qemu-img names, plus "vmfs") and
 * resize (grow).  File naming follows VMware: "name.vmdk" is the
 * descriptor (or the whole monolithic file), extents are "name-flat.vmdk",
 * "name-s001.vmdk", "name-f001.vmdk".
 */
#include "vmdk_priv.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum subformat {
	SUB_MONOLITHIC_SPARSE,
	SUB_MONOLITHIC_FLAT,
	SUB_SPLIT_SPARSE,
	SUB_SPLIT_FLAT,
	SUB_STREAM,
	SUB_VMFS,
};

static const struct {
	const char *name;
	enum subformat sub;
} subformats[] = {
	{ "monolithicSparse", SUB_MONOLITHIC_SPARSE },
	{ "monolithicFlat", SUB_MONOLITHIC_FLAT },
	{ "twoGbMaxExtentSparse", SUB_SPLIT_SPARSE },
	{ "twoGbMaxExtentFlat", SUB_SPLIT_FLAT },
	{ "streamOptimized", SUB_STREAM },
	{ "vmfs", SUB_VMFS },
};

int vmdk_sparse_create_extent(struct img_file *f, uint64_t capacity,
			      uint32_t grain_sectors, const char *desc_text,
			      bool stream, bool zero_grain, char *err,
			      size_t errlen)
{
	struct vmdk_sparse_header h, disk;
	uint32_t n, i, *dir = NULL;
	uint64_t gd_sectors, gt_sectors;
	char *area = NULL;
	int ret;

	vmdk_sparse_header_init(&h, capacity, grain_sectors, desc_text != NULL,
				stream, zero_grain);
	n = vmdk_gd_entries_for(capacity, grain_sectors, VMDK_GTES_PER_GT);
	gd_sectors = vmdk_gd_sectors(n);
	gt_sectors = vmdk_gt_sectors(VMDK_GTES_PER_GT);
	if (desc_text) {
		size_t len = strlen(desc_text), bytes;

		bytes = (size_t)h.desc_size * VMDK_SECTOR;
		if (len > bytes)
			return img_error_buf(err, errlen, -ENOSPC,
					     "descriptor (%zu bytes) does not "
					     "fit the embedded area",
					     len);
		area = calloc(1, bytes);
		if (!area)
			return -ENOMEM;
		memcpy(area, desc_text, len);
		ret = img_file_pwrite(f, area, bytes,
				      h.desc_offset * VMDK_SECTOR);
		free(area);
		if (ret)
			goto io_fail;
	}
	if (stream) {
		ret = vmdk_stream_write_tail(f, &h, NULL, n, h.overhead, err,
					     errlen);
		if (ret)
			return ret;
	} else {
		dir = malloc((size_t)gd_sectors * VMDK_SECTOR);
		if (!dir)
			return -ENOMEM;
		memset(dir, 0, (size_t)gd_sectors * VMDK_SECTOR);
		for (i = 0; i < n; i++)
			dir[i] = IMG_LE32((uint32_t)(h.rgd_offset + gd_sectors +
						     i * gt_sectors));
		ret = img_file_pwrite(f, dir, gd_sectors * VMDK_SECTOR,
				      h.rgd_offset * VMDK_SECTOR);
		if (ret)
			goto io_fail;
		for (i = 0; i < n; i++)
			dir[i] = IMG_LE32((uint32_t)(h.gd_offset + gd_sectors +
						     i * gt_sectors));
		ret = img_file_pwrite(f, dir, gd_sectors * VMDK_SECTOR,
				      h.gd_offset * VMDK_SECTOR);
		if (ret)
			goto io_fail;
		ret = img_file_truncate(f, h.overhead * VMDK_SECTOR);
		if (ret)
			goto io_fail;
	}
	disk = h;
	vmdk_sparse_header_to_disk(&disk);
	ret = img_file_pwrite(f, &disk, sizeof(disk), 0);
	if (ret)
		goto io_fail;
	free(dir);
	return 0;
io_fail:
	free(dir);
	return img_error_buf(err, errlen, ret, "%s: write failed: %s", f->path,
			     strerror(-ret));
}

static bool opt_true(const char *v)
{
	return v && (!strcmp(v, "on") || !strcmp(v, "true") ||
		     !strcmp(v, "yes") || !strcmp(v, "1"));
}

/* "dir/name.vmdk" -> dir ("." when none) and "name". */
static int split_path(const char *path, char **dir, char **base)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	size_t n = strlen(name);

	if (slash)
		*dir = strndup(path, (size_t)(slash - path)
					     ? (size_t)(slash - path)
					     : 1);
	else
		*dir = strdup(".");
	if (n > 5 && !strcasecmp(name + n - 5, ".vmdk"))
		n -= 5;
	*base = strndup(name, n);
	if (!*dir || !*base) {
		free(*dir);
		free(*base);
		return -ENOMEM;
	}
	return 0;
}

struct created {
	char *paths[1024];
	int n;
};

static int create_file(struct created *c, struct img_file *f, const char *path,
		       bool excl, char *err, size_t errlen)
{
	int ret;

	if (c->n >= (int)(sizeof(c->paths) / sizeof(c->paths[0])))
		return img_error_buf(err, errlen, -EFBIG, "too many extents");
	ret = img_file_create(f, path, excl, err, errlen);
	if (ret)
		return ret;
	c->paths[c->n] = strdup(path);
	if (!c->paths[c->n]) {
		img_file_close(f);
		return -ENOMEM;
	}
	c->n++;
	return 0;
}

static int desc_fill(struct vmdk_desc *d, const struct img_create_args *a,
		     const char *create_type, uint64_t sectors,
		     const char *adapter, const char *hw, char *err,
		     size_t errlen)
{
	uint32_t cyl, heads, secs;
	uint8_t uuid[16];
	char buf[64];
	const char *tools = img_create_arg(a, "toolsversion");
	int ret = 0;

	memset(d, 0, sizeof(*d));
	d->version = 1;
	d->encoding = strdup("UTF-8");
	if (!d->encoding)
		return -ENOMEM;
	do {
		img_random_bytes(&d->cid, sizeof(d->cid));
	} while (d->cid == VMDK_CID_NONE);
	d->parent_cid = VMDK_CID_NONE;
	snprintf(d->create_type, sizeof(d->create_type), "%s", create_type);
	if (a->backing_file) {
		ret = vmdk_desc_set_parent_hint(d, a->backing_file);
		if (ret)
			return ret;
		if (a->backing && !strcmp(img_format(a->backing), "vmdk")) {
			struct vmdk_state *p = img_state(a->backing);

			d->parent_cid = p->desc.cid;
		}
	}
	vmdk_geometry(sectors, adapter, &cyl, &heads, &secs);
	ret |= vmdk_desc_set(d, "ddb.adapterType", adapter);
	snprintf(buf, sizeof(buf), "%" PRIu32, cyl);
	ret |= vmdk_desc_set(d, "ddb.geometry.cylinders", buf);
	snprintf(buf, sizeof(buf), "%" PRIu32, heads);
	ret |= vmdk_desc_set(d, "ddb.geometry.heads", buf);
	snprintf(buf, sizeof(buf), "%" PRIu32, secs);
	ret |= vmdk_desc_set(d, "ddb.geometry.sectors", buf);
	img_random_bytes(uuid, sizeof(uuid));
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
	vmdk_uuid_format_ddb(uuid, buf);
	ret |= vmdk_desc_set(d, "ddb.uuid", buf);
	ret |= vmdk_desc_set(d, "ddb.virtualHWVersion", hw);
	if (tools)
		ret |= vmdk_desc_set(d, "ddb.toolsVersion", tools);
	if (ret)
		return img_error_buf(err, errlen, -ENOMEM, "out of memory");
	return 0;
}

static int write_text_file(struct img_file *f, const char *text, size_t len,
			   char *err, size_t errlen)
{
	int ret = img_file_pwrite(f, text, len, 0);

	if (!ret)
		ret = img_file_truncate(f, len);
	if (ret)
		return img_error_buf(err, errlen, ret,
				     "%s: cannot write the descriptor: %s",
				     f->path, strerror(-ret));
	return 0;
}

int vmdk_create(const struct img_create_args *a, char *errbuf, size_t errlen)
{
	const char *subname = a->subformat ? a->subformat
					   : img_create_arg(a, "subformat");
	const char *adapter = img_create_arg(a, "adapter_type");
	const char *hw = img_create_arg(a, "hwversion");
	bool zero_grain = opt_true(img_create_arg(a, "zeroed_grain"));
	enum subformat sub = SUB_MONOLITHIC_SPARSE;
	struct created made = { .n = 0 };
	struct vmdk_desc d;
	struct img_file f, descf;
	bool descf_open = false;
	char *dir = NULL, *base = NULL, *text = NULL, *name = NULL,
	     *path = NULL;
	uint64_t size = a->size, sectors, left, per;
	uint32_t grain = a->cluster_size ? a->cluster_size : 65536;
	size_t len, i;
	int ret, idx;
	bool split, flat;

	memset(&d, 0, sizeof(d));
	if (subname) {
		for (i = 0; i < sizeof(subformats) / sizeof(subformats[0]); i++)
			if (!strcmp(subname, subformats[i].name))
				break;
		if (i == sizeof(subformats) / sizeof(subformats[0]))
			return img_error_buf(
				errbuf, errlen, -EINVAL,
				"unknown VMDK subformat '%s' (monolithicSparse, "
				"monolithicFlat, twoGbMaxExtentSparse, "
				"twoGbMaxExtentFlat, streamOptimized, vmfs)",
				subname);
		sub = subformats[i].sub;
	}
	if (!adapter)
		adapter = "ide";
	if (strcmp(adapter, "ide") && strcmp(adapter, "lsilogic") &&
	    strcmp(adapter, "buslogic") && strcmp(adapter, "legacyESX"))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "unknown adapter_type '%s' (ide, "
				     "lsilogic, buslogic, legacyESX)",
				     adapter);
	if (!hw)
		hw = "4";
	if (!*hw || strspn(hw, "0123456789") != strlen(hw) || strlen(hw) > 3)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "hwversion '%s' is not a number", hw);
	if (grain < 4096 || grain > (1u << 20) || (grain & (grain - 1)))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "grain size %u is invalid (power of two "
				     "from 4 KiB to 1 MiB)",
				     grain);
	if (!size && a->backing)
		size = img_size(a->backing);
	if (!size)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "a VMDK needs a size above 0");
	sectors = (size + VMDK_SECTOR - 1) / VMDK_SECTOR;
	if (sectors > (UINT64_C(1) << 37))
		return img_error_buf(errbuf, errlen, -EFBIG,
				     "%" PRIu64 " bytes is beyond VMDK's "
				     "64 TiB limit",
				     size);
	ret = desc_fill(&d, a, subformats[sub].name, sectors, adapter, hw,
			errbuf, errlen);
	if (ret)
		goto fail;
	ret = split_path(a->path, &dir, &base);
	if (ret)
		goto fail;
	grain /= VMDK_SECTOR;

	if (sub == SUB_MONOLITHIC_SPARSE || sub == SUB_STREAM) {
		const char *slash = strrchr(a->path, '/');

		ret = vmdk_desc_add_extent(&d, VMDK_ACCESS_RW, sectors,
					   VMDK_EXTENT_SPARSE,
					   slash ? slash + 1 : a->path, 0);
		if (!ret)
			ret = vmdk_desc_format(&d, &text, &len);
		if (ret)
			goto fail;
		ret = create_file(&made, &f, a->path, a->excl, errbuf, errlen);
		if (ret)
			goto fail;
		ret = vmdk_sparse_create_extent(&f, sectors, grain, text,
						sub == SUB_STREAM, zero_grain,
						errbuf, errlen);
		if (!ret)
			ret = img_file_sync(&f);
		img_file_close(&f);
		if (ret)
			goto fail;
		goto done;
	}

	split = sub == SUB_SPLIT_SPARSE || sub == SUB_SPLIT_FLAT;
	flat = sub != SUB_SPLIT_SPARSE;
	per = split ? VMDK_SPLIT_EXTENT_SECTORS : sectors;
	/* The descriptor first, so a failure leaves no orphan extents. */
	ret = create_file(&made, &descf, a->path, a->excl, errbuf, errlen);
	if (ret)
		goto fail;
	descf_open = true;
	for (left = sectors, idx = 1; left; idx++) {
		uint64_t n = left < per ? left : per;

		free(name);
		free(path);
		path = NULL;
		if (!split)
			ret = asprintf(&name, "%s-flat.vmdk", base);
		else
			ret = asprintf(&name, "%s-%c%03d.vmdk", base,
				       flat ? 'f' : 's', idx);
		if (ret < 0) {
			name = NULL;
			ret = -ENOMEM;
			goto fail;
		}
		path = vmdk_path_join(dir, name);
		if (!path) {
			ret = -ENOMEM;
			goto fail;
		}
		ret = vmdk_desc_add_extent(&d, VMDK_ACCESS_RW, n,
					   flat ? (sub == SUB_VMFS
							   ? VMDK_EXTENT_VMFS
							   : VMDK_EXTENT_FLAT)
						: VMDK_EXTENT_SPARSE,
					   name, 0);
		if (ret)
			goto fail;
		ret = create_file(&made, &f, path, a->excl, errbuf, errlen);
		if (ret)
			goto fail;
		if (flat)
			ret = img_file_truncate(&f, n * VMDK_SECTOR);
		else
			ret = vmdk_sparse_create_extent(&f, n, grain, NULL,
							false, zero_grain,
							errbuf, errlen);
		if (!ret)
			ret = img_file_sync(&f);
		img_file_close(&f);
		if (ret) {
			img_error_buf(errbuf, errlen, ret,
				      "%s: cannot create the extent: %s", path,
				      strerror(-ret));
			goto fail;
		}
		left -= n;
	}
	ret = vmdk_desc_format(&d, &text, &len);
	if (ret)
		goto fail;
	ret = write_text_file(&descf, text, len, errbuf, errlen);
	if (!ret)
		ret = img_file_sync(&descf);
	img_file_close(&descf);
	descf_open = false;
	if (ret)
		goto fail;
done:
	for (idx = 0; idx < made.n; idx++)
		free(made.paths[idx]);
	free(text);
	free(dir);
	free(base);
	free(name);
	free(path);
	vmdk_desc_free(&d);
	return 0;
fail:
	if (descf_open)
		img_file_close(&descf);
	for (idx = made.n - 1; idx >= 0; idx--) {
		unlink(made.paths[idx]);
		free(made.paths[idx]);
	}
	free(text);
	free(dir);
	free(base);
	free(name);
	free(path);
	vmdk_desc_free(&d);
	return ret;
}

/* ---- resize -------------------------------------------------------------*/

/* Appends one extent file (split subformats) of n sectors. */
static int add_split_extent(struct img *img, uint64_t n, bool flat)
{
	struct vmdk_state *s = img_state(img);
	struct vmdk_extent *e, **arr;
	struct img_file f;
	char err[IMG_ERRMSG_MAX];
	char *dir = NULL, *base = NULL, *name = NULL, *path = NULL;
	const char *slash = strrchr(img_filename(img), '/');
	struct vmdk_extent *last = s->extents[s->nextents - 1];
	uint32_t grain = last->sparse ? last->grain_sectors : 0;
	bool zero_grain = last->zero_grain;
	int idx = s->desc.nextents + 1, ret;

	ret = split_path(slash ? slash + 1 : img_filename(img), &dir, &base);
	if (ret)
		return ret;
	if (asprintf(&name, "%s-%c%03d.vmdk", base, flat ? 'f' : 's', idx) <
	    0) {
		name = NULL;
		ret = -ENOMEM;
		goto out;
	}
	path = vmdk_path_join(img_dirname(img), name);
	if (!path) {
		ret = -ENOMEM;
		goto out;
	}
	ret = img_file_create(&f, path, true, err, sizeof(err));
	if (ret) {
		img_error(img, ret, "%s", err);
		goto out;
	}
	if (flat)
		ret = img_file_truncate(&f, n * VMDK_SECTOR);
	else
		ret = vmdk_sparse_create_extent(
			&f, n, grain ? grain : VMDK_DEFAULT_GRAIN_SECTORS, NULL,
			false, zero_grain, err, sizeof(err));
	if (!ret)
		ret = img_file_sync(&f);
	img_file_close(&f);
	if (ret) {
		unlink(path);
		vmdk_io_error(img, ret, "%s: cannot create the extent", path);
		goto out;
	}
	ret = vmdk_desc_add_extent(&s->desc, VMDK_ACCESS_RW, n,
				   flat ? VMDK_EXTENT_FLAT : VMDK_EXTENT_SPARSE,
				   name, 0);
	if (ret)
		goto out;
	arr = realloc(s->extents, sizeof(*arr) * (size_t)(s->nextents + 1));
	e = calloc(1, sizeof(*e));
	if (arr)
		s->extents = arr;
	if (!arr || !e) {
		free(e);
		ret = -ENOMEM;
		goto out;
	}
	e->start = s->extents[s->nextents - 1]->start +
		   s->extents[s->nextents - 1]->sectors;
	s->extents[s->nextents++] = e;
	ret = vmdk_extent_open(img, e, &s->desc.extents[s->desc.nextents - 1],
			       s->desc.nextents - 1);
out:
	free(dir);
	free(base);
	free(name);
	free(path);
	return ret;
}

static int grow_extent(struct img *img, int i, uint64_t add)
{
	struct vmdk_state *s = img_state(img);
	struct vmdk_extent *e = s->extents[i];
	int ret;

	if (e->sparse) {
		ret = vmdk_sparse_grow(img, e, e->sectors + add);
	} else if (e->type == VMDK_EXTENT_FLAT || e->type == VMDK_EXTENT_VMFS) {
		ret = img_file_truncate(e->file, (e->flat_offset + e->sectors +
						  add) * VMDK_SECTOR);
		if (ret)
			vmdk_io_error(img, ret, "%s: cannot extend", e->path);
		else
			e->file_size = (e->flat_offset + e->sectors + add) *
				       VMDK_SECTOR;
	} else {
		ret = 0; /* ZERO extents just get longer */
	}
	if (ret)
		return ret;
	e->sectors += add;
	s->desc.extents[i].sectors += add;
	return 0;
}

int vmdk_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	struct vmdk_state *s = img_state(img);
	uint64_t old = vmdk_desc_total_sectors(&s->desc);
	uint64_t want = (new_size + VMDK_SECTOR - 1) / VMDK_SECTOR, add;
	uint32_t cyl, heads, secs;
	const char *adapter;
	char buf[32];
	bool split;
	int ret;

	(void)flags;
	if (s->stream)
		return img_error(img, -ENOTSUP,
				 "streamOptimized images cannot be resized in "
				 "place; convert to monolithicSparse, resize, "
				 "convert back");
	if (!s->writable)
		return img_error(img, -EROFS, "image is read-only");
	if (!s->has_desc)
		return img_error(img, -ENOTSUP,
				 "a bare extent has no descriptor to resize");
	if (want < old)
		return img_error(img, -ENOTSUP,
				 "shrinking a VMDK is not supported");
	if (want == old)
		return 0;
	if (want > (UINT64_C(1) << 37))
		return img_error(img, -EFBIG,
				 "size beyond VMDK's 64 TiB limit");
	add = want - old;
	split = !strncmp(s->desc.create_type, "twoGbMaxExtent", 14);
	if (split) {
		struct vmdk_extent *last = s->extents[s->nextents - 1];
		bool flat = !last->sparse;
		uint64_t room =
			last->sectors < VMDK_SPLIT_EXTENT_SECTORS
				? VMDK_SPLIT_EXTENT_SECTORS - last->sectors
				: 0;

		if (room) {
			ret = grow_extent(img, s->nextents - 1,
					  add < room ? add : room);
			if (ret)
				return ret;
			add -= add < room ? add : room;
		}
		while (add) {
			uint64_t n = add < VMDK_SPLIT_EXTENT_SECTORS
					     ? add
					     : VMDK_SPLIT_EXTENT_SECTORS;

			ret = add_split_extent(img, n, flat);
			if (ret)
				return ret;
			add -= n;
		}
	} else {
		ret = grow_extent(img, s->nextents - 1, add);
		if (ret)
			return ret;
	}
	adapter = vmdk_desc_get(&s->desc, "ddb.adapterType");
	vmdk_geometry(want, adapter, &cyl, &heads, &secs);
	snprintf(buf, sizeof(buf), "%" PRIu32, cyl);
	if (vmdk_desc_get(&s->desc, "ddb.geometry.cylinders"))
		vmdk_desc_set(&s->desc, "ddb.geometry.cylinders", buf);
	ret = vmdk_write_descriptor(img);
	if (!ret)
		ret = img_file_sync(&s->main_file);
	if (ret)
		return ret;
	img_set_size(img, want * VMDK_SECTOR);
	return 0;
}
