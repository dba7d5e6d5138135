{{ current_declarations(source('raw', 'contributions')) }}
