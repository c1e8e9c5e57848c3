#!/usr/bin/env bash
# Checks, previews, applies and rolls back the kernel settings in tuning/sysctl.conf.
#
#   sysctl.sh --check              one line per setting; exit 0 when nothing differs
#   sysctl.sh --dry-run            the exact commands --apply would run
#   sysctl.sh --apply              save the current values to a rollback file, then apply
#   sysctl.sh --rollback FILE      restore the values saved by --apply
# Options: --conf FILE (default: sysctl.conf next to this script), --state-dir DIR (where
# --apply writes rollback files; default /var/lib/spate/tuning).
# Environment: SPATE_TUNING_ROOT=DIR runs against a fake /proc/sys under DIR (for tests).
#
# Unlike `sysctl -p`, this never lowers a limit that the host already has higher (the ">="
# settings in sysctl.conf) and only writes the keys that differ. tuning/common.sh describes
# the output and the rollback file; tuning/README.md says why each setting matters.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

PROG=$(basename "$0")
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

CONF="$HERE/sysctl.conf"

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "$0"
}

# True when every field of HAVE satisfies OP against the same field of WANT. Fields are
# compared as unsigned decimal strings, so values up to the kernel's 64-bit limits compare
# correctly; non-numeric values only support "=".
satisfies() {
    local op=$1 have=$2 want=$3
    local -a have_fields want_fields
    read -r -a have_fields <<< "$have"
    read -r -a want_fields <<< "$want"
    if [[ ${#have_fields[@]} -ne ${#want_fields[@]} ]]; then
        return 1
    fi
    if [[ $op == '=' ]]; then
        [[ "${have_fields[*]}" == "${want_fields[*]}" ]]
        return
    fi
    local i cmp
    for i in "${!want_fields[@]}"; do
        cmp=$(compare_numbers "${have_fields[i]}" "${want_fields[i]}") || return 1
        case $op in
            '>=') [[ $cmp -ge 0 ]] || return 1 ;;
            '<=') [[ $cmp -le 0 ]] || return 1 ;;
        esac
    done
}

# Prints -1, 0 or 1 as A is less than, equal to or greater than B (unsigned decimals).
compare_numbers() {
    local a=$1 b=$2
    [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] || return 1
    a=${a#"${a%%[!0]*}"}
    b=${b#"${b%%[!0]*}"}
    if [[ ${#a} -ne ${#b} ]]; then
        [[ ${#a} -lt ${#b} ]] && echo -1 || echo 1
    elif [[ $a < $b ]]; then
        echo -1
    elif [[ $a > $b ]]; then
        echo 1
    else
        echo 0
    fi
}

# The value to write: WANT for "=", and for ">=" / "<=" each field moved only as far as
# needed, so that a field the host already has beyond the recommendation keeps its value.
target_value() {
    local op=$1 have=$2 want=$3
    local -a have_fields want_fields out=()
    read -r -a have_fields <<< "$have"
    read -r -a want_fields <<< "$want"
    if [[ $op == '=' || ${#have_fields[@]} -ne ${#want_fields[@]} ]]; then
        printf '%s' "${want_fields[*]}"
        return
    fi
    local i cmp
    for i in "${!want_fields[@]}"; do
        cmp=$(compare_numbers "${have_fields[i]}" "${want_fields[i]}") || cmp=x
        if [[ $cmp == x ]] ||
            { [[ $op == '>=' ]] && [[ $cmp -lt 0 ]]; } ||
            { [[ $op == '<=' ]] && [[ $cmp -gt 0 ]]; }; then
            out+=("${want_fields[i]}")
        else
            out+=("${have_fields[i]}")
        fi
    done
    printf '%s' "${out[*]}"
}

# The byte-based twin of a ratio key: writing one of the pair makes the kernel zero the other,
# so --apply saves both and --rollback can put back whichever the host was using.
twin_of() {
    case $1 in
        vm.dirty_ratio) echo vm.dirty_bytes ;;
        vm.dirty_background_ratio) echo vm.dirty_background_bytes ;;
    esac
}

key_path() {
    printf '%s/proc/sys/%s' "$ROOT" "${1//.//}"
}

check_setting() {
    local key=$1 op=$2 want=$3 path have twin twin_path twin_value note=''
    path=$(key_path "$key")
    if [[ ! -e $path ]]; then
        report skip "$key: not present on this kernel ($path)"
        return
    fi
    if ! have=$(read_value "$path"); then
        report skip "$key: cannot read $path"
        return
    fi
    have=$(printf '%s' "$have" | tr -s ' \t' '  ')
    twin=$(twin_of "$key")
    if [[ -n $twin ]]; then
        twin_path=$(key_path "$twin")
        snapshot_path "$twin_path"
        if twin_value=$(read_value "$twin_path") && [[ $twin_value != 0 ]]; then
            note=" ($twin = $twin_value is in use; setting $key clears it)"
        fi
    fi
    if satisfies "$op" "$have" "$want"; then
        report ok "$key = $have (want $op $want)"
        return
    fi
    report differ "$key: have $have, want $op $want$note"
    plan_write "$path" "$(target_value "$op" "$have" "$want")"
}

main() {
    while [[ $# -gt 0 ]]; do
        if parse_common_option "$@"; then
            shift "$SHIFT_BY"
            continue
        fi
        case $1 in
            --conf)
                [[ $# -ge 2 ]] || die '--conf needs a file'
                CONF=$2
                shift 2
                ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) die "unknown argument '$1' (see --help)" ;;
        esac
    done
    [[ -n $MODE ]] || die 'choose a mode: --check, --dry-run, --apply or --rollback FILE'
    if [[ $MODE == rollback ]]; then
        run_rollback
        return
    fi
    [[ -r $CONF ]] || die "cannot read $CONF"
    [[ -d "$ROOT/proc/sys" ]] || die "$ROOT/proc/sys does not exist"

    local line op='=' key value
    # "key = value", with optional spaces and an optional leading "-" (sysctl's "ignore
    # failures" mark).
    local key_line='^[[:space:]]*-?([A-Za-z0-9_.-]+)[[:space:]]*='
    key_line+='[[:space:]]*(.*[^[:space:]])[[:space:]]*$'
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line =~ ^#\ spate-check:\ *(=|\>=|\<=)\ *$ ]]; then
            op=${BASH_REMATCH[1]}
            continue
        fi
        if [[ $line =~ $key_line ]]; then
            key=${BASH_REMATCH[1]}
            value=$(printf '%s' "${BASH_REMATCH[2]}" | tr -s ' \t' '  ')
            check_setting "$key" "$op" "$value"
            op='='
        fi
    done < "$CONF"
    finish
}

main "$@"
