# drctl adapter for ../shared/bench/peers.sh (sourced by it; see its header for the contract).
# Needs DRCTL_JS (path of dist/cli/main.js, run as the executable it is, as the `drctl` bin);
# bench/run.sh exports it.
# The point name is the item name, so the second backup of disk.img finds its parent.
INIT[drctl]='"$DRCTL_JS" init --repo "$REPO" -q'
BACKUP[drctl]='cd "$SRC" && if [ -d "$ITEM" ]; then "$DRCTL_JS" backup --repo "$REPO" --files "$ITEM" --name "$ITEM" -q; else "$DRCTL_JS" backup --repo "$REPO" --image "$ITEM" --name "$ITEM" -q; fi'
RESTORE[drctl]='mkdir -p "$OUT" && "$DRCTL_JS" restore --repo "$REPO" latest --name "$ITEM" --to "$OUT/$ITEM" -q'
RESTORED[drctl]='$OUT/$ITEM'
CHECK[drctl]='"$DRCTL_JS" check --repo "$REPO" --read-data -q'
