# What scripts/build-deb and scripts/build-deb-component share: staging a
# package by hand and packing it with dpkg-deb, reproducibly (fixed owners,
# modes and timestamps from SOURCE_DATE_EPOCH, by default the last commit's
# time, and files in a fixed order). Sourced, from the repository's root:
#
#     . scripts/deb-common.sh
#     deb_start PACKAGE            # sets $version $arch $work $root $doc
#     ... install files under "$root" ...
#     deb_doc                      # copyright and changelog.gz
#     deb_pack <<EOF               # writes DEBIAN/, builds, prints build/*.deb
#     Depends: ...
#     Description: ...
#     EOF

deb_start() {
	package=$1
	version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
	arch=$(dpkg --print-architecture)
	: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
	export SOURCE_DATE_EPOCH
	# Maintainer: DEB_MAINTAINER, by default the author of the last commit.
	: "${DEB_MAINTAINER:=$(git log -1 --format='%an <%ae>' 2>/dev/null || echo 'client_proxy maintainers <root@localhost>')}"
	# A private staging directory, so that two builds at once do not mix.
	mkdir -p build
	work=$(mktemp -d build/deb.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	root="$work/debian/$package"
	doc="$root/usr/share/doc/$package"
	mkdir -p "$root/DEBIAN" "$doc"
}

# Strips an ELF file of everything a running program does not need.
deb_strip() {
	strip --strip-unneeded --remove-section=.comment --remove-section=.note "$1"
}

# The Depends of the ELF files given (paths inside "$root"), as
# dpkg-shlibdeps reads them from their symbol versions; it wants a
# debian/control to run in.
deb_shlibs() {
	printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$package" "$package" >"$work/debian/control"
	for f in "$@"; do set -- "$@" "debian/$package/$f"; shift; done
	shlibs=$(cd "$work" && dpkg-shlibdeps -O "$@" | sed -n 's/^shlibs:Depends=//p')
	rm "$work/debian/control"
	[ -n "$shlibs" ] || { echo "dpkg-shlibdeps found no dependencies" >&2; exit 1; }
	echo "$shlibs"
}

# usr/share/doc/PACKAGE: the copyright (the project's MIT license) and the
# changelog of a native package (changelog.gz: the version has no Debian
# revision), one entry naming the commit it was built from.
deb_doc() {
	year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
	cat >"$doc/copyright" <<EOC
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: client_proxy

Files: *
Copyright: $year the client_proxy authors
License: MIT

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a
 copy of this software and associated documentation files (the "Software"),
 to deal in the Software without restriction, including without limitation
 the rights to use, copy, modify, merge, publish, distribute, sublicense,
 and/or sell copies of the Software, and to permit persons to whom the
 Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included
 in all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
 OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
 CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
 SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
EOC
	commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
	{
		printf '%s (%s) unstable; urgency=medium\n\n' "$package" "$version"
		printf '  * client_proxy %s, built from commit %s.\n\n' "$version" "$commit"
		printf ' -- %s  %s\n' "$DEB_MAINTAINER" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
	} | gzip -9n >"$doc/changelog.gz"
	chmod 0644 "$doc/copyright" "$doc/changelog.gz"
}

# DEBIAN/ (md5sums; conffiles, for the files under etc/; control, with the
# fields of stdin after the common ones), then the package, printed as
# build/PACKAGE_VERSION_ARCH.deb.
deb_pack() {
	(cd "$root" && find usr lib -type f 2>/dev/null | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
	if [ -d "$root/etc" ]; then
		(cd "$root" && find etc -type f | LC_ALL=C sort | sed 's|^|/|') >"$root/DEBIAN/conffiles"
		chmod 0644 "$root/DEBIAN/conffiles"
	fi
	installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	{
		cat <<EOC
Package: $package
Version: $version
Architecture: $arch
Maintainer: $DEB_MAINTAINER
Installed-Size: $installed_size
Section: net
Priority: optional
EOC
		cat
	} >"$root/DEBIAN/control"
	chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
	find "$root" -type d -exec chmod 0755 {} +
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	out="build/${package}_${version}_${arch}.deb"
	dpkg-deb --root-owner-group -Zxz --build "$root" "$work/$package.deb" >/dev/null
	mv -f "$work/$package.deb" "$out"
	echo "$out"
}
