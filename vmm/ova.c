// SPDX-License-Identifier: MIT
/*
 * OVA export and import (see ova.h).  The descriptor follows DMTF DSP0243
 * (OVF 1.0): References, DiskSection, VirtualSystem with a
 * VirtualHardwareSection of CIM RASD items (ResourceType 3 CPU, 4 memory,
 * 20 SATA controller, 17 disk, 15 CD-ROM).  In the tar the descriptor comes
 * first, the manifest second, then the files in References' order.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "img.h"
#include "vmm/cmd.h"
#include "vmm/options.h"
#include "vmm/ova.h"
#include "vmm/vmdef.h"

#define NS_OVF "http://schemas.dmtf.org/ovf/envelope/1"
#define NS_RASD                                              \
	"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/" \
	"CIM_ResourceAllocationSettingData"
#define NS_VSSD                                              \
	"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/" \
	"CIM_VirtualSystemSettingData"
#define VMDK_STREAM_FORMAT                                          \
	"http://www.vmware.com/interfaces/specifications/vmdk.html" \
	"#streamOptimized"
#define OVA_MAX_FILES 64

/* ---- shared helpers ----------------------------------------------------*/

/* rm -r of a scratch folder we made (flat: files only) */
static void remove_scratch(const char *dir)
{
	char path[PATH_MAX * 2];
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
	closedir(d);
	rmdir(dir);
}

/* hex SHA-256 (or SHA-1) of a file */
static int file_digest(const char *path, const char *algorithm, char *hex,
		       size_t hexlen)
{
	const EVP_MD *md = EVP_get_digestbyname(algorithm);
	unsigned char buf[1 << 16], digest[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	EVP_MD_CTX *ctx;
	ssize_t n;
	int fd, ret = 0;

	if (!md)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ctx = EVP_MD_CTX_new();
	if (!ctx || !EVP_DigestInit_ex(ctx, md, NULL))
		ret = -ENOMEM;
	while (!ret && (n = read(fd, buf, sizeof(buf))) > 0)
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	if (!ret && n < 0)
		ret = -errno;
	if (!ret)
		EVP_DigestFinal_ex(ctx, digest, &dlen);
	EVP_MD_CTX_free(ctx);
	close(fd);
	if (ret || hexlen < 2 * dlen + 1)
		return ret ? ret : -ERANGE;
	for (unsigned i = 0; i < dlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	return 0;
}

/* ---- export ------------------------------------------------------------*/

static xmlNodePtr add_text(xmlNodePtr parent, xmlNsPtr ns, const char *name,
			   const char *text)
{
	return xmlNewTextChild(parent, ns, BAD_CAST name, BAD_CAST text);
}

static void add_item(xmlNodePtr hw, xmlNsPtr rasd, const char *const *fields)
{
	xmlNodePtr item = xmlNewChild(hw, hw->ns, BAD_CAST "Item", NULL);

	/* RASD elements in the schema's (alphabetical) order */
	for (const char *const *f = fields; f[0]; f += 2)
		add_text(item, rasd, f[0], f[1]);
}

static char *build_descriptor(const char *name, json_object *options,
			      char files[][128], const uint64_t *capacity,
			      const off_t *file_size, unsigned ndisks, int *len)
{
	xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
	xmlNodePtr env = xmlNewNode(NULL, BAD_CAST "Envelope");
	xmlNsPtr ovf, rasd, vssd;
	xmlNodePtr refs, disks, vs, os, hw, sys, n;
	json_object *v;
	uint64_t memory = DEFAULT_MEMORY;
	const char *cpus = "1";
	char buf[64], id[24], addr[16];
	xmlChar *out = NULL;
	unsigned instance = 1, controller;

	if (json_object_object_get_ex(options, "memory", &v))
		boot_options_parse_size(json_object_get_string(v), &memory);
	if (json_object_object_get_ex(options, "cpus", &v))
		cpus = json_object_get_string(v);
	xmlDocSetRootElement(doc, env);
	xmlNewNs(env, BAD_CAST NS_OVF, NULL);
	ovf = xmlNewNs(env, BAD_CAST NS_OVF, BAD_CAST "ovf");
	rasd = xmlNewNs(env, BAD_CAST NS_RASD, BAD_CAST "rasd");
	vssd = xmlNewNs(env, BAD_CAST NS_VSSD, BAD_CAST "vssd");
	xmlNewNs(env, BAD_CAST "http://www.w3.org/2001/XMLSchema-instance",
		 BAD_CAST "xsi");
	xmlSetNs(env, ovf);
	xmlNewNsProp(env, ovf, BAD_CAST "version", BAD_CAST "1.0");

	refs = xmlNewChild(env, ovf, BAD_CAST "References", NULL);
	for (unsigned i = 0; i < ndisks; i++) {
		n = xmlNewChild(refs, ovf, BAD_CAST "File", NULL);
		snprintf(id, sizeof(id), "file%u", i + 1);
		xmlNewNsProp(n, ovf, BAD_CAST "href", BAD_CAST files[i]);
		xmlNewNsProp(n, ovf, BAD_CAST "id", BAD_CAST id);
		snprintf(buf, sizeof(buf), "%lld", (long long)file_size[i]);
		xmlNewNsProp(n, ovf, BAD_CAST "size", BAD_CAST buf);
	}
	disks = xmlNewChild(env, ovf, BAD_CAST "DiskSection", NULL);
	add_text(disks, ovf, "Info", "Virtual disks");
	for (unsigned i = 0; i < ndisks; i++) {
		n = xmlNewChild(disks, ovf, BAD_CAST "Disk", NULL);
		snprintf(buf, sizeof(buf), "%llu",
			 (unsigned long long)capacity[i]);
		xmlNewNsProp(n, ovf, BAD_CAST "capacity", BAD_CAST buf);
		snprintf(id, sizeof(id), "vmdisk%u", i + 1);
		xmlNewNsProp(n, ovf, BAD_CAST "diskId", BAD_CAST id);
		snprintf(id, sizeof(id), "file%u", i + 1);
		xmlNewNsProp(n, ovf, BAD_CAST "fileRef", BAD_CAST id);
		xmlNewNsProp(n, ovf, BAD_CAST "format",
			     BAD_CAST VMDK_STREAM_FORMAT);
	}
	vs = xmlNewChild(env, ovf, BAD_CAST "VirtualSystem", NULL);
	xmlNewNsProp(vs, ovf, BAD_CAST "id", BAD_CAST name);
	add_text(vs, ovf, "Info", "A virtual machine made by imgvm");
	add_text(vs, ovf, "Name", name);
	os = xmlNewChild(vs, ovf, BAD_CAST "OperatingSystemSection", NULL);
	xmlNewNsProp(os, ovf, BAD_CAST "id", BAD_CAST "0");
	add_text(os, ovf, "Info", "The guest operating system");
	add_text(os, ovf, "Description", "Other");
	hw = xmlNewChild(vs, ovf, BAD_CAST "VirtualHardwareSection", NULL);
	add_text(hw, ovf, "Info", "Virtual hardware requirements");
	sys = xmlNewChild(hw, ovf, BAD_CAST "System", NULL);
	add_text(sys, vssd, "ElementName", "Virtual Hardware Family");
	add_text(sys, vssd, "InstanceID", "0");
	add_text(sys, vssd, "VirtualSystemIdentifier", name);
	add_text(sys, vssd, "VirtualSystemType", "virtualbox-2.2");

	snprintf(id, sizeof(id), "%u", instance++);
	snprintf(buf, sizeof(buf), "%s virtual CPU", cpus);
	add_item(hw, rasd,
		 (const char *const[]){ "Caption", buf, "Description",
					"Number of virtual CPUs", "ElementName",
					buf, "InstanceID", id, "ResourceType",
					"3", "VirtualQuantity", cpus, NULL });
	snprintf(id, sizeof(id), "%u", instance++);
	snprintf(addr, sizeof(addr), "%llu",
		 (unsigned long long)(memory >> 20));
	snprintf(buf, sizeof(buf), "%s MB of memory", addr);
	add_item(hw, rasd,
		 (const char *const[]){ "AllocationUnits", "MegaBytes",
					"Caption", buf, "Description",
					"Memory Size", "ElementName", buf,
					"InstanceID", id, "ResourceType", "4",
					"VirtualQuantity", addr, NULL });
	controller = instance++;
	snprintf(id, sizeof(id), "%u", controller);
	add_item(hw, rasd,
		 (const char *const[]){
			 "Address", "0", "Caption", "sataController0",
			 "Description", "SATA Controller", "ElementName",
			 "sataController0", "InstanceID", id, "ResourceSubType",
			 "AHCI", "ResourceType", "20", NULL });
	for (unsigned i = 0; i < ndisks; i++) {
		char host[32], parent[16], elem[16];

		snprintf(id, sizeof(id), "%u", instance++);
		snprintf(parent, sizeof(parent), "%u", controller);
		/* AHCI ports as imgvm uses them: 0, then 2, 3, ... */
		snprintf(addr, sizeof(addr), "%u", i ? i + 1 : 0);
		snprintf(host, sizeof(host), "/disk/vmdisk%u", i + 1);
		snprintf(elem, sizeof(elem), "disk%u", i + 1);
		add_item(hw, rasd,
			 (const char *const[]){
				 "AddressOnParent", addr, "Caption", elem,
				 "Description", "Disk Image", "ElementName",
				 elem, "HostResource", host, "InstanceID", id,
				 "Parent", parent, "ResourceType", "17",
				 NULL });
	}
	if (json_object_object_get_ex(options, "cdrom", NULL)) {
		char parent[16];

		snprintf(id, sizeof(id), "%u", instance++);
		snprintf(parent, sizeof(parent), "%u", controller);
		add_item(hw, rasd,
			 (const char *const[]){
				 "AddressOnParent", "1", "AutomaticAllocation",
				 "true", "Caption", "cdrom1", "Description",
				 "CD-ROM Drive", "ElementName", "cdrom1",
				 "InstanceID", id, "Parent", parent,
				 "ResourceType", "15", NULL });
	}
	xmlDocDumpFormatMemoryEnc(doc, &out, len, "UTF-8", 1);
	xmlFreeDoc(doc);
	return (char *)out;
}

static int write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ssize_t n = fd < 0 ? -1 : write(fd, data, len);

	if (fd >= 0 && (fsync(fd) || close(fd)))
		n = -1;
	return n == (ssize_t)len ? 0 : -EIO;
}

static int tar_add(struct archive *a, const char *dir, const char *name)
{
	char path[PATH_MAX * 2], buf[1 << 16];
	struct archive_entry *e;
	struct stat st;
	ssize_t n;
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st))
		return -errno;
	e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_size(e, st.st_size);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_mtime(e, st.st_mtime, 0);
	if (archive_write_header(a, e) != ARCHIVE_OK)
		ret = -EIO;
	while (!ret && (n = read(fd, buf, sizeof(buf))) > 0)
		if (archive_write_data(a, buf, (size_t)n) != n)
			ret = -EIO;
	archive_entry_free(e);
	close(fd);
	return ret;
}

int ova_export(const char *name, json_object *options, const char *path,
	       char *err, size_t errlen)
{
	char scratch[PATH_MAX], tmp_out[PATH_MAX + 16], file[PATH_MAX * 2];
	char files[8][128], ovf_name[96], mf_name[96],
		hex[2 * EVP_MAX_MD_SIZE + 1];
	uint64_t capacity[8];
	off_t file_size[8];
	const char **disks;
	char *descriptor = NULL, *mf = NULL, *slash;
	size_t ndisks, mflen = 0;
	struct archive *a = NULL;
	int dlen = 0, ret = -EIO;

	disks = vmdef_disks(options, &ndisks, false);
	if (ndisks > 8) {
		snprintf(err, errlen, "at most 8 disks in an appliance");
		free(disks);
		return -EINVAL;
	}
	snprintf(scratch, sizeof(scratch), "%s", path);
	slash = strrchr(scratch, '/');
	snprintf(slash ? slash + 1 : scratch,
		 sizeof(scratch) - (size_t)(slash ? slash + 1 - scratch : 0),
		 ".%s.ova.XXXXXX", name);
	if (!mkdtemp(scratch)) {
		snprintf(err, errlen, "%s: %s", scratch, strerror(errno));
		free(disks);
		return -errno;
	}
	/* the disks as streamOptimized VMDKs, their sizes and digests */
	for (size_t i = 0; i < ndisks; i++) {
		char src[PATH_MAX], *comma;
		struct img_open_options oo = { .flags = IMG_OPEN_RDONLY };
		struct img *img;
		struct stat st;
		char e[IMG_ERRMSG_MAX];
		const char *args[] = { "imgtool", "convert",
				       "-O",	  "vmdk",
				       "-o",	  "subformat=streamOptimized",
				       src,	  file,
				       NULL };

		snprintf(src, sizeof(src), "%s", disks[i]);
		if ((comma = strchr(src, ',')))
			*comma = 0;
		if (img_open(&img, src, &oo, e, sizeof(e))) {
			snprintf(err, errlen, "%s", e);
			goto out;
		}
		capacity[i] = img_size(img);
		img_close(img);
		snprintf(files[i], sizeof(files[i]), "%s-disk%zu.vmdk", name,
			 i + 1);
		snprintf(file, sizeof(file), "%s/%s", scratch, files[i]);
		if (imgtool_run(args, true)) {
			snprintf(err, errlen, "%s: conversion to VMDK failed",
				 src);
			goto out;
		}
		if (stat(file, &st)) {
			snprintf(err, errlen, "%s: %s", file, strerror(errno));
			goto out;
		}
		file_size[i] = st.st_size;
	}
	descriptor = build_descriptor(name, options, files, capacity, file_size,
				      (unsigned)ndisks, &dlen);
	snprintf(ovf_name, sizeof(ovf_name), "%s.ovf", name);
	snprintf(mf_name, sizeof(mf_name), "%s.mf", name);
	snprintf(file, sizeof(file), "%s/%s", scratch, ovf_name);
	if (!descriptor || write_file(file, descriptor, (size_t)dlen)) {
		snprintf(err, errlen, "cannot write the OVF descriptor");
		goto out;
	}
	/* the manifest: SHA256(FILE)= HEX for the descriptor and each disk */
	for (size_t i = 0; i <= ndisks; i++) {
		const char *f = i ? files[i - 1] : ovf_name;
		char line[256];
		char *grown;
		int n;

		snprintf(file, sizeof(file), "%s/%s", scratch, f);
		if (file_digest(file, "SHA256", hex, sizeof(hex))) {
			snprintf(err, errlen, "%s: cannot read", file);
			goto out;
		}
		n = snprintf(line, sizeof(line), "SHA256(%s)= %s\n", f, hex);
		grown = realloc(mf, mflen + (size_t)n + 1);
		if (!grown)
			goto out;
		mf = grown;
		memcpy(mf + mflen, line, (size_t)n + 1);
		mflen += (size_t)n;
	}
	snprintf(file, sizeof(file), "%s/%s", scratch, mf_name);
	if (write_file(file, mf, mflen)) {
		snprintf(err, errlen, "cannot write the manifest");
		goto out;
	}
	/* the tar: descriptor, manifest, disks; renamed into place whole */
	snprintf(tmp_out, sizeof(tmp_out), "%s.tmp", path);
	a = archive_write_new();
	if (!a || archive_write_set_format_ustar(a) != ARCHIVE_OK ||
	    archive_write_open_filename(a, tmp_out) != ARCHIVE_OK) {
		snprintf(err, errlen, "%s: %s", tmp_out,
			 a ? archive_error_string(a) : "out of memory");
		goto out;
	}
	if (tar_add(a, scratch, ovf_name) || tar_add(a, scratch, mf_name)) {
		snprintf(err, errlen, "%s: %s", tmp_out,
			 archive_error_string(a));
		goto out;
	}
	for (size_t i = 0; i < ndisks; i++)
		if (tar_add(a, scratch, files[i])) {
			snprintf(err, errlen, "%s: %s", tmp_out,
				 archive_error_string(a));
			goto out;
		}
	if (archive_write_close(a) != ARCHIVE_OK || rename(tmp_out, path)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	if (a) {
		archive_write_free(a);
		if (ret)
			unlink(tmp_out);
	}
	remove_scratch(scratch);
	xmlFree(descriptor);
	free(mf);
	free(disks);
	return ret;
}

/* ---- the descriptor ----------------------------------------------------*/

static bool is_element(xmlNodePtr n, const char *name)
{
	return n->type == XML_ELEMENT_NODE &&
	       !strcmp((const char *)n->name, name);
}

static xmlNodePtr child(xmlNodePtr parent, const char *name)
{
	for (xmlNodePtr n = parent ? parent->children : NULL; n; n = n->next)
		if (is_element(n, name))
			return n;
	return NULL;
}

/* an attribute by local name, whatever its namespace prefix */
static char *attribute(xmlNodePtr n, const char *name)
{
	for (xmlAttrPtr a = n->properties; a; a = a->next)
		if (!strcmp((const char *)a->name, name))
			return (char *)xmlNodeGetContent((xmlNodePtr)a);
	return NULL;
}

static char *child_text(xmlNodePtr n, const char *name)
{
	xmlNodePtr c = child(n, name);

	return c ? (char *)xmlNodeGetContent(c) : NULL;
}

static bool safe_file_name(const char *name)
{
	size_t len = strlen(name);

	if (!len || len >= 128 || name[0] == '.' || strchr(name, '/') ||
	    strchr(name, '\\'))
		return false;
	return true;
}

int ova_parse_descriptor(const char *text, size_t len, struct ova_machine *m,
			 char *err, size_t errlen)
{
	/* no network, no external entities, no entity expansion */
	xmlDocPtr doc =
		len > INT32_MAX
			? NULL
			: xmlReadMemory(text, (int)len, "descriptor.ovf", NULL,
					XML_PARSE_NONET | XML_PARSE_NOERROR |
						XML_PARSE_NOWARNING);
	xmlNodePtr env, refs, disks, vs, hw;
	struct {
		char id[64], href[128];
	} ref[OVA_MAX_FILES];
	struct {
		char id[64], file_ref[64];
		unsigned long long capacity;
	} dsk[8];
	struct {
		unsigned address;
		char disk[64];
	} att[8];
	unsigned nref = 0, ndsk = 0, natt = 0;
	int ret = -EINVAL;

	memset(m, 0, sizeof(*m));
	if (!doc) {
		snprintf(err, errlen, "the OVF descriptor is not XML");
		return -EINVAL;
	}
	/* OVF has no use for a DTD; entities could only expand (a billion
	 * laughs) or reach out (external ones): refused outright */
	if (doc->intSubset || doc->extSubset) {
		snprintf(err, errlen,
			 "the OVF descriptor has a DOCTYPE "
			 "(entities are not accepted)");
		goto out;
	}
	env = xmlDocGetRootElement(doc);
	if (!env || !is_element(env, "Envelope")) {
		snprintf(err, errlen, "no OVF Envelope");
		goto out;
	}
	refs = child(env, "References");
	for (xmlNodePtr n = refs ? refs->children : NULL; n; n = n->next) {
		char *id, *href;

		if (!is_element(n, "File"))
			continue;
		id = attribute(n, "id");
		href = attribute(n, "href");
		if (!id || !href || nref == OVA_MAX_FILES ||
		    !safe_file_name(href) || strlen(id) >= 64) {
			snprintf(err, errlen,
				 "bad File in References (href '%.60s')",
				 href ? href : "");
			xmlFree(id);
			xmlFree(href);
			goto out;
		}
		snprintf(ref[nref].id, sizeof(ref[nref].id), "%s", id);
		snprintf(ref[nref].href, sizeof(ref[nref].href), "%s", href);
		nref++;
		xmlFree(id);
		xmlFree(href);
	}
	disks = child(env, "DiskSection");
	for (xmlNodePtr n = disks ? disks->children : NULL; n; n = n->next) {
		char *id, *file_ref, *cap, *units, *end;

		if (!is_element(n, "Disk"))
			continue;
		if (ndsk == 8) {
			snprintf(err, errlen, "more than 8 disks");
			goto out;
		}
		id = attribute(n, "diskId");
		file_ref = attribute(n, "fileRef");
		cap = attribute(n, "capacity");
		units = attribute(n, "capacityAllocationUnits");
		if (!id || !file_ref || !cap || strlen(id) >= 64 ||
		    strlen(file_ref) >= 64) {
			snprintf(err, errlen,
				 "a Disk without diskId, fileRef "
				 "or capacity");
			xmlFree(id);
			xmlFree(file_ref);
			xmlFree(cap);
			xmlFree(units);
			goto out;
		}
		snprintf(dsk[ndsk].id, 64, "%s", id);
		snprintf(dsk[ndsk].file_ref, 64, "%s", file_ref);
		errno = 0;
		dsk[ndsk].capacity = strtoull(cap, &end, 10);
		/* "byte * 2^30" and the like */
		if (units && strstr(units, "2^")) {
			unsigned shift =
				(unsigned)atoi(strstr(units, "2^") + 2);

			if (shift < 64 &&
			    dsk[ndsk].capacity < (1ull << (63 - shift)))
				dsk[ndsk].capacity <<= shift;
		}
		ndsk++;
		xmlFree(id);
		xmlFree(file_ref);
		xmlFree(cap);
		xmlFree(units);
	}
	vs = child(env, "VirtualSystem");
	if (!vs) {
		/* a VirtualSystemCollection holds the first system */
		vs = child(child(env, "VirtualSystemCollection"),
			   "VirtualSystem");
	}
	if (!vs) {
		snprintf(err, errlen, "no VirtualSystem");
		goto out;
	}
	{
		char *id = attribute(vs, "id");
		char *nm = child_text(vs, "Name");
		const char *use = nm && *nm ? nm : id ? id : "imported";
		size_t o = 0;

		/* a VM name: what the descriptor says, reduced to the
		 * characters names may have */
		for (const char *c = use; *c && o < sizeof(m->name) - 1; c++) {
			bool okc = (*c >= 'a' && *c <= 'z') ||
				   (*c >= 'A' && *c <= 'Z') ||
				   (*c >= '0' && *c <= '9') || *c == '-' ||
				   *c == '_' || *c == '.';

			if (o == 0 && (*c == '.' || *c == '-'))
				continue;
			m->name[o++] = okc ? *c : '_';
		}
		if (!o)
			snprintf(m->name, sizeof(m->name), "imported");
		xmlFree(id);
		xmlFree(nm);
	}
	hw = child(vs, "VirtualHardwareSection");
	for (xmlNodePtr n = hw ? hw->children : NULL; n; n = n->next) {
		char *type, *qty, *units, *host, *address;
		int rt;

		if (!is_element(n, "Item"))
			continue;
		type = child_text(n, "ResourceType");
		rt = type ? atoi(type) : 0;
		xmlFree(type);
		qty = child_text(n, "VirtualQuantity");
		units = child_text(n, "AllocationUnits");
		if (rt == 3 && qty) {
			unsigned long c = strtoul(qty, NULL, 10);

			m->cpus = c >= 1 && c <= 64 ? (unsigned)c : 0;
		} else if (rt == 4 && qty) {
			unsigned long long q = strtoull(qty, NULL, 10);

			/* MegaBytes, "byte * 2^20", GigaBytes, "byte * 2^30" */
			if (units && (strstr(units, "2^30") ||
				      strstr(units, "GigaBytes")))
				q <<= 10;
			else if (units && !strstr(units, "2^20") &&
				 !strstr(units, "MegaBytes") &&
				 !strcmp(units, "byte"))
				q >>= 20;
			m->memory_mib = q <= (1ull << 24) ? q : 0;
		} else if (rt == 17 && natt < 8) {
			host = child_text(n, "HostResource");
			address = child_text(n, "AddressOnParent");
			if (host) {
				const char *slash = strrchr(host, '/');

				snprintf(att[natt].disk, 64, "%s",
					 slash ? slash + 1 : host);
				att[natt].address =
					address ? (unsigned)atoi(address)
						: natt;
				natt++;
			}
			xmlFree(host);
			xmlFree(address);
		}
		xmlFree(qty);
		xmlFree(units);
	}
	/* disks in their controller address order */
	for (unsigned i = 1; i < natt; i++)
		for (unsigned j = i;
		     j > 0 && att[j].address < att[j - 1].address; j--) {
			__typeof__(att[0]) t = att[j];

			att[j] = att[j - 1];
			att[j - 1] = t;
		}
	for (unsigned i = 0; i < natt; i++) {
		unsigned d, r;

		for (d = 0; d < ndsk && strcmp(dsk[d].id, att[i].disk); d++)
			;
		if (d == ndsk) {
			snprintf(err, errlen, "disk '%s' is not in DiskSection",
				 att[i].disk);
			goto out;
		}
		for (r = 0; r < nref && strcmp(ref[r].id, dsk[d].file_ref); r++)
			;
		if (r == nref) {
			snprintf(err, errlen,
				 "disk '%s': file '%s' is not in "
				 "References",
				 dsk[d].id, dsk[d].file_ref);
			goto out;
		}
		snprintf(m->disk_file[m->ndisks], 128, "%s", ref[r].href);
		m->disk_capacity[m->ndisks] = dsk[d].capacity;
		m->ndisks++;
	}
	ret = 0;
out:
	xmlFreeDoc(doc);
	return ret;
}

/* ---- import ------------------------------------------------------------*/

/* Checks each "ALG(FILE)= HEX" (or "ALG (FILE) = HEX") line of the
 * manifest against the extracted files. */
static int check_manifest(const char *dir, const char *mf, char *err,
			  size_t errlen)
{
	char path[PATH_MAX * 2], line[512], hex[2 * EVP_MAX_MD_SIZE + 1];
	FILE *f;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, mf);
	f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "%s: %s", mf, strerror(errno));
		return -errno;
	}
	while (!ret && fgets(line, sizeof(line), f)) {
		char alg[16], name[160], want[160];

		if (strspn(line, " \t\r\n") == strlen(line))
			continue;
		if (sscanf(line, "%15[A-Za-z0-9] (%159[^)]) = %159s", alg, name,
			   want) != 3 &&
		    sscanf(line, "%15[A-Za-z0-9](%159[^)])= %159s", alg, name,
			   want) != 3) {
			snprintf(err, errlen,
				 "%s: a line is not ALG(FILE)= HEX", mf);
			ret = -EINVAL;
			break;
		}
		if (!safe_file_name(name)) {
			snprintf(err, errlen, "%s: bad file name '%.60s'", mf,
				 name);
			ret = -EINVAL;
			break;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (file_digest(path, alg, hex, sizeof(hex))) {
			snprintf(err, errlen, "%s: cannot check %s (%s)", mf,
				 name, alg);
			ret = -EINVAL;
		} else if (strcasecmp(hex, want)) {
			snprintf(err, errlen,
				 "%s: the %s digest of %s does not match: the "
				 "appliance is damaged",
				 mf, alg, name);
			ret = -EINVAL;
		}
	}
	fclose(f);
	return ret;
}

int ova_import(const char *path, const char *name, const char *format,
	       char *err, size_t errlen)
{
	char dir[PATH_MAX], scratch[PATH_MAX + 32], file[PATH_MAX * 2];
	char ovf[128] = "", mf[128] = "", *text = NULL;
	struct ova_machine m;
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	json_object *options = NULL, *disk_list;
	unsigned nfiles = 0;
	bool made_dir = false;
	int ret = -EINVAL, r;

	if (!format)
		format = "vdi";
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	archive_read_support_format_tar(a);
	if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
		snprintf(err, errlen, "%s: %s", path, archive_error_string(a));
		archive_read_free(a);
		return -EINVAL;
	}
	snprintf(scratch, sizeof(scratch), "%s.import.XXXXXX", path);
	if (!mkdtemp(scratch)) {
		snprintf(err, errlen, "%s: %s", scratch, strerror(errno));
		archive_read_free(a);
		return -errno;
	}
	/* extract: plain files with plain names only, the descriptor first */
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		const char *entry = archive_entry_pathname(e);
		const char *dot = entry ? strrchr(entry, '.') : NULL;
		int fd;

		if (!entry || !safe_file_name(entry) ||
		    archive_entry_filetype(e) != AE_IFREG ||
		    ++nfiles > OVA_MAX_FILES) {
			snprintf(err, errlen,
				 "%s: entry '%.60s' is not a plain file with a "
				 "plain name",
				 path, entry ? entry : "");
			goto out;
		}
		if (nfiles == 1 && (!dot || strcasecmp(dot, ".ovf"))) {
			snprintf(err, errlen,
				 "%s: the first file is not an OVF descriptor",
				 path);
			goto out;
		}
		if (nfiles == 1)
			snprintf(ovf, sizeof(ovf), "%s", entry);
		else if (dot && !strcasecmp(dot, ".mf"))
			snprintf(mf, sizeof(mf), "%s", entry);
		snprintf(file, sizeof(file), "%s/%s", scratch, entry);
		fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || archive_read_data_into_fd(a, fd) != ARCHIVE_OK) {
			snprintf(err, errlen, "%s: %s: %s", path, entry,
				 fd < 0 ? strerror(errno)
					: archive_error_string(a));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		close(fd);
	}
	if (r != ARCHIVE_EOF || !ovf[0]) {
		snprintf(err, errlen, "%s: %s", path,
			 r != ARCHIVE_EOF ? archive_error_string(a)
					  : "no OVF descriptor");
		goto out;
	}
	if (mf[0] && check_manifest(scratch, mf, err, errlen))
		goto out;
	snprintf(file, sizeof(file), "%s/%s", scratch, ovf);
	{
		FILE *f = fopen(file, "r");
		long len;

		if (!f || fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 ||
		    len > (16 << 20) || fseek(f, 0, SEEK_SET) ||
		    !(text = malloc((size_t)len + 1)) ||
		    fread(text, 1, (size_t)len, f) != (size_t)len) {
			snprintf(err, errlen, "%s: cannot read the descriptor",
				 ovf);
			if (f)
				fclose(f);
			goto out;
		}
		fclose(f);
		if (ova_parse_descriptor(text, (size_t)len, &m, err, errlen))
			goto out;
	}
	if (!name)
		name = m.name;
	if (vmdef_dir(name, dir, sizeof(dir), err, errlen))
		goto out;
	{
		char home[PATH_MAX];

		snprintf(home, sizeof(home), "%s", dir);
		*strrchr(home, '/') = 0;
		vmdef_mkdirs(home);
	}
	if (mkdir(dir, 0700)) {
		snprintf(err, errlen, "%s: %s", dir,
			 errno == EEXIST ? "a VM of that name exists"
					 : strerror(errno));
		goto out;
	}
	made_dir = true;
	options = json_object_new_object();
	if (m.memory_mib) {
		char v[32];

		snprintf(v, sizeof(v), "%lluM", m.memory_mib);
		json_object_object_add(options, "memory",
				       json_object_new_string(v));
	}
	if (m.cpus) {
		char v[16];

		snprintf(v, sizeof(v), "%u", m.cpus);
		json_object_object_add(options, "cpus",
				       json_object_new_string(v));
	}
	disk_list = json_object_new_array();
	json_object_object_add(options, "disk", disk_list);
	for (unsigned i = 0; i < m.ndisks; i++) {
		char src[PATH_MAX * 2], dst[PATH_MAX * 2],
			value[PATH_MAX * 2 + 32];
		const char *args[] = { "imgtool", "convert", "-O", format,
				       src,	  dst,	     NULL };

		snprintf(src, sizeof(src), "%s/%s", scratch, m.disk_file[i]);
		if (access(src, R_OK)) {
			snprintf(err, errlen, "%s: the appliance lacks %s",
				 path, m.disk_file[i]);
			goto out;
		}
		if (i)
			snprintf(dst, sizeof(dst), "%s/%s-%u.%s", dir, name,
				 i + 1, format);
		else
			snprintf(dst, sizeof(dst), "%s/%s.%s", dir, name,
				 format);
		if (imgtool_run(args, true)) {
			snprintf(err, errlen, "%s: converting %s to %s failed",
				 path, m.disk_file[i], format);
			goto out;
		}
		snprintf(value, sizeof(value), "%s,format=%s", dst, format);
		json_object_array_add(disk_list, json_object_new_string(value));
	}
	if (vmdef_save(name, options, err, errlen))
		goto out;
	ret = 0;
out:
	archive_read_free(a);
	remove_scratch(scratch);
	if (ret && made_dir)
		remove_scratch(dir);
	json_object_put(options);
	free(text);
	return ret;
}
