# bash completion for imgtool(1)                      -*- shell-script -*-
# Install as /usr/share/bash-completion/completions/imgtool, or source it.

_imgtool_formats="raw vdi vhd vpc vhdx vmdk qcow2"

_imgtool_snapshot_names()
{
	# Snapshots of FILE are the layers in FILE.snapshots/.
	local file=$1 f
	[ -d "$file.snapshots" ] || return
	for f in "$file.snapshots"/*; do
		[ -f "$f" ] || continue
		f=${f##*/}
		case $f in index | pending | *.tmp) continue ;; esac
		echo "${f%.*}"
	done
}

_imgtool_files()
{
	if declare -F _filedir >/dev/null; then
		_imgtool_files
	else
		COMPREPLY=($(compgen -f -- "$cur"))
	fi
}

_imgtool()
{
	local cur prev words cword
	if declare -F _init_completion >/dev/null; then
		_init_completion -s || return
	else
		# Without the bash-completion package.
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD - 1]}
	fi

	local commands="create info check convert resize snapshot commit rebase
		compare map checksum measure compact serve mount umount help"
	if [ "$cword" -eq 1 ]; then
		COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
		return
	fi
	local cmd=${words[1]}

	# "--output=json": COMP_WORDBREAKS splits at '='.
	if [ "$prev" = "=" ] && [ "${words[cword - 2]}" = --output ]; then
		COMPREPLY=($(compgen -W "human json" -- "$cur"))
		return
	fi
	case $prev in
	-f | -O | -F | --format)
		COMPREPLY=($(compgen -W "$_imgtool_formats" -- "$cur"))
		return
		;;
	--output)
		COMPREPLY=($(compgen -W "human json" -- "$cur"))
		return
		;;
	-r)
		if [ "$cmd" = check ]; then
			COMPREPLY=($(compgen -W "leaks all" -- "$cur"))
			return
		fi
		;;
	-a | --algorithm)
		COMPREPLY=($(compgen -W "sha256 sha512 md5 sha1 sha3-256 blake2b512" -- "$cur"))
		return
		;;
	-o)
		case $cmd in
		create | convert | measure)
			COMPREPLY=($(compgen -W "subformat= cluster_size= preallocation= force_size= help" -- "$cur"))
			compopt -o nospace
			;;
		mount)
			COMPREPLY=($(compgen -W "ro rw" -- "$cur"))
			;;
		esac
		return
		;;
	-S | -m | --size | --port | --shared | --threads | --export-name | -x | -e | --bind)
		return
		;;
	-b | -B | --socket | --pidfile | --tls-cert | --tls-key)
		_imgtool_files
		return
		;;
	esac
	[[ $cur == --output=* ]] && {
		COMPREPLY=($(compgen -W "human json" -- "${cur#--output=}"))
		return
	}

	local opts=""
	case $cmd in
	create) opts="-f -o -b -F -q --help" ;;
	info) opts="-f --output= --backing-chain -U --force-share --help" ;;
	check) opts="-f -r --output= -q -U --help" ;;
	convert) opts="-f -O -o -c -n -p -q -S -B -F -m -U --help" ;;
	resize) opts="-f --shrink -q --help" ;;
	commit) opts="-f -d -q --help" ;;
	rebase) opts="-f -F -b -u -p -q --help" ;;
	compare) opts="-f -F -s -p -q -U --help" ;;
	map) opts="-f --output= -U --help" ;;
	checksum) opts="-a -f -p -q -U --help" ;;
	measure) opts="-O -o -f --size --output= -U --help" ;;
	compact) opts="-f -q --help" ;;
	serve) opts="--port --bind --socket --read-only --export-name --shared
		--tls-cert --tls-key --pidfile --daemon --format --threads --verbose --help" ;;
	mount) opts="-o --read-only --foreground --format --help" ;;
	umount) opts="--help" ;;
	help)
		COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		return
		;;
	snapshot)
		# snapshot [options] ACTION FILE [NAME]
		local args=() i
		for ((i = 2; i < cword; i++)); do
			[[ ${words[i]} == -* ]] || args+=("${words[i]}")
		done
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "-f -q --force --help" -- "$cur"))
		elif [ ${#args[@]} -eq 0 ]; then
			COMPREPLY=($(compgen -W "create list revert delete" -- "$cur"))
		elif [ ${#args[@]} -eq 1 ]; then
			_imgtool_files
		elif [ ${#args[@]} -eq 2 ] && [ "${args[0]}" != list ] &&
			[ "${args[0]}" != create ]; then
			COMPREPLY=($(compgen -W "$(_imgtool_snapshot_names "${args[1]}")" -- "$cur"))
		fi
		return
		;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		[[ ${COMPREPLY[0]-} == *= ]] && compopt -o nospace
		return
	fi
	_imgtool_files
} &&
	complete -F _imgtool imgtool
