/* SPDX-License-Identifier: MIT */
/*
 * imgvm's OVF descriptor parser: descriptors as VirtualBox and VMware
 * write them (namespace prefixes, allocation units, disk order by
 * controller address), and hostile ones (entities, paths in file names,
 * references to nothing).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "vmm/ova.h"

static char err[512];

static int parse(const char *text, struct ova_machine *m)
{
	err[0] = 0;
	return ova_parse_descriptor(text, strlen(text), m, err, sizeof(err));
}

/* VMware's ovftool style: default namespace, "ovf:/disk/ID", units as
 * "byte * 2^20", the disks listed in reverse address order */
static const char vmware[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" "
	"xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" "
	"xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
	"CIM_ResourceAllocationSettingData\">\n"
	"<References><File ovf:href=\"web-disk1.vmdk\" ovf:id=\"file1\"/>"
	"<File ovf:href=\"web-disk2.vmdk\" ovf:id=\"file2\"/></References>\n"
	"<DiskSection><Info>d</Info>"
	"<Disk ovf:capacity=\"16\" ovf:capacityAllocationUnits=\"byte * 2^30\" "
	"ovf:diskId=\"vmdisk1\" ovf:fileRef=\"file1\"/>"
	"<Disk ovf:capacity=\"1073741824\" ovf:diskId=\"vmdisk2\" "
	"ovf:fileRef=\"file2\"/></DiskSection>\n"
	"<VirtualSystem ovf:id=\"web server/1\"><Info>x</Info>"
	"<VirtualHardwareSection><Info>h</Info>"
	"<Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>"
	"<rasd:ResourceType>3</rasd:ResourceType>"
	"<rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>"
	"<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>"
	"<rasd:ResourceType>4</rasd:ResourceType>"
	"<rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>"
	"<Item><rasd:AddressOnParent>1</rasd:AddressOnParent>"
	"<rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource>"
	"<rasd:ResourceType>17</rasd:ResourceType></Item>"
	"<Item><rasd:AddressOnParent>0</rasd:AddressOnParent>"
	"<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>"
	"<rasd:ResourceType>17</rasd:ResourceType></Item>"
	"</VirtualHardwareSection></VirtualSystem></Envelope>\n";

Test(ova, vmware_style_descriptor)
{
	struct ova_machine m;

	cr_assert_eq(parse(vmware, &m), 0, "%s", err);
	cr_assert_str_eq(m.name, "web_server_1");
	cr_assert_eq(m.cpus, 4);
	cr_assert_eq(m.memory_mib, 2048);
	cr_assert_eq(m.ndisks, 2);
	cr_assert_str_eq(m.disk_file[0], "web-disk1.vmdk");
	cr_assert_eq(m.disk_capacity[0], 16ull << 30);
	cr_assert_str_eq(m.disk_file[1], "web-disk2.vmdk");
	cr_assert_eq(m.disk_capacity[1], 1ull << 30);
}

static void expect_refused(const char *text, const char *why)
{
	struct ova_machine m;

	cr_assert_neq(parse(text, &m), 0, "accepted: %s", text);
	cr_assert_not_null(strstr(err, why), "error '%s' lacks '%s'", err, why);
}

Test(ova, hostile_descriptors)
{
	expect_refused("", "not XML");
	expect_refused("<Envelope><References>", "not XML");
	expect_refused("<Other/>", "no OVF Envelope");
	expect_refused("<Envelope/>", "no VirtualSystem");
	/* a file name with a path, or hidden */
	expect_refused("<Envelope xmlns:ovf=\"o\"><References><File "
		       "ovf:href=\"../../etc/passwd\" ovf:id=\"f\"/>"
		       "</References></Envelope>",
		       "bad File");
	expect_refused("<Envelope xmlns:ovf=\"o\"><References><File "
		       "ovf:href=\".hidden\" ovf:id=\"f\"/>"
		       "</References></Envelope>",
		       "bad File");
	/* a disk that names no file, a hardware disk that names no disk */
	expect_refused("<Envelope xmlns:ovf=\"o\"><DiskSection><Disk "
		       "ovf:diskId=\"d\"/></DiskSection></Envelope>",
		       "without");
	expect_refused(
		"<Envelope xmlns:ovf=\"o\"><VirtualSystem ovf:id=\"v\">"
		"<VirtualHardwareSection><Item><ResourceType>17</ResourceType>"
		"<HostResource>/disk/nope</HostResource></Item>"
		"</VirtualHardwareSection></VirtualSystem></Envelope>",
		"not in DiskSection");
}

Test(ova, a_doctype_is_refused)
{
	struct ova_machine m;
	/* an external entity: never read */
	static const char ext[] =
		"<?xml version=\"1.0\"?><!DOCTYPE Envelope [<!ENTITY x SYSTEM "
		"\"file:///etc/hostname\">]><Envelope><VirtualSystem id=\"v\">"
		"<Name>&x;</Name></VirtualSystem></Envelope>";
	/* a billion laughs: never expanded */
	static const char laughs[] =
		"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\">"
		"<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
		"<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">"
		"<!ENTITY d \"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">"
		"<!ENTITY e \"&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;\">"
		"<!ENTITY f \"&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;\">"
		"<!ENTITY g \"&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;\">"
		"<!ENTITY h \"&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;\">]>"
		"<Envelope><VirtualSystem id=\"v\"><Name>&h;</Name>"
		"</VirtualSystem></Envelope>";

	/* refused by libxml2 itself or by the DOCTYPE rule */
	cr_assert_neq(parse(ext, &m), 0);
	cr_assert(strstr(err, "DOCTYPE") || strstr(err, "not XML"), "%s", err);
	cr_assert_neq(parse(laughs, &m), 0);
	cr_assert(strstr(err, "DOCTYPE") || strstr(err, "not XML"), "%s", err);
	/* a harmless internal subset is refused all the same */
	cr_assert_neq(parse("<?xml version=\"1.0\"?><!DOCTYPE Envelope []>"
			    "<Envelope><VirtualSystem/></Envelope>",
			    &m),
		      0);
	cr_assert_not_null(strstr(err, "DOCTYPE"), "%s", err);
}

Test(ova, too_many_disks)
{
	char text[8192];
	size_t n = 0;
	struct ova_machine m;

	n += (size_t)snprintf(text + n, sizeof(text) - n,
			      "<Envelope xmlns:ovf=\"o\"><DiskSection>");
	for (int i = 0; i < 9; i++)
		n += (size_t)snprintf(
			text + n, sizeof(text) - n,
			"<Disk ovf:diskId=\"d%d\" ovf:fileRef=\"f\" "
			"ovf:capacity=\"1\"/>",
			i);
	snprintf(text + n, sizeof(text) - n, "</DiskSection></Envelope>");
	cr_assert_neq(parse(text, &m), 0);
	cr_assert_not_null(strstr(err, "more than 8"), "%s", err);
}
