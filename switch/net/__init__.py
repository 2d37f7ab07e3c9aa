"""The trio layer: listeners, channel connections and bank links. It only moves bytes."""
