{{ current_declarations() }}
